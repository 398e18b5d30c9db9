"""`virnucpro bench`: the project's engine and its peers on the same inputs, in one process, on one GPU."""
