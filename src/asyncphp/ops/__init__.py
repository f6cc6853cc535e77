"""The operator's commands: check, status, dead letters, install, and the daemon's metrics."""
