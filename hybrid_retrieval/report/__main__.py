from hybrid_retrieval.report.cli import main

main()
