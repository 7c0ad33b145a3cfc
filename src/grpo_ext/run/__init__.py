"""One run's state and lifecycle: its directory and records, checkpoints and resuming, the best model, the processes
of a launch, and the entry-point wrapper that turns the library's errors into messages and exit codes."""
