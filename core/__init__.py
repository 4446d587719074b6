"""segdeck's engine: arrays and typed parameters in, arrays and records out. No UI here."""
