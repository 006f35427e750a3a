"""Floor 3: reading images and writing masks, one reader and one writer per backend, one geometry convention."""
