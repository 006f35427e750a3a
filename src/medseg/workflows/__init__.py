"""Floor 7: the pipeline's steps as functions — prepare, predict, evaluate, compare, sweep — composed from the floors below."""
