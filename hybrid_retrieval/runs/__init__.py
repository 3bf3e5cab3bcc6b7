"""Run management: the fail-fast config check, sweeps and job records, loggers, process set-up."""
