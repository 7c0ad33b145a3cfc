"""The run's configuration: the schemas Hydra composes against, the ``trainer`` node derived from the installed
TRL, and the one validation pass from a composed config to the description of a run."""
