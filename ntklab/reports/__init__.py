"""Reading the result database: run overviews, the filter language and run listings."""
