"""Plain helpers every layer may use (files, paths, errors, the console): they import nothing else of the package."""
