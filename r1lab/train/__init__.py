"""What every training loop shares: divergence guards, the lr schedule, CPU threads fitted to the free cores."""
