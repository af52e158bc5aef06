"""The built-in synthetic task (pick both ends of a bar), in one place: its data (data,
preference_data: the data layer) and its evaluators (evaluate, preference_eval: the evaluation
layer). Nothing is imported here, so that the data modules stay below evaluation."""
