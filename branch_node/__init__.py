"""A branch: terminals, PIN pads, the workload model and the request client."""
