"""Training, generation, evaluation and Hub code of reasonapp; `python -m training --help`."""
