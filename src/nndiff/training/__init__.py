"""Training the generator: the loops, their budgets judged on validation data, the functional loss."""
