"""What watches a run while it trains: the Trainer callbacks that keep its record, stop it on a signal or a
divergence, warn of steps that teach nothing, evaluate it, and the external loggers (W&B)."""
