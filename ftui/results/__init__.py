"""What a finished run gives: reload, evaluate, predict, explain, export, compare, model card."""
