"""The Batch API's machinery below HTTP: durable files and batches, and the runner that
computes them behind the online traffic."""
