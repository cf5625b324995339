"""What a command does end to end, composing the layers below (data, models, training, reporting)."""
