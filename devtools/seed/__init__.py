"""Sample directory data and a writer that changes the store the way VUD itself would."""
