"""Datasets as numpy arrays and the mini-batch order. Importing this package imports nothing heavy."""
