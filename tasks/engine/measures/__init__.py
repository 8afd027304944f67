"""One module per measure: `Params` plus `run(ctx, params)`. Top levels stay torch-free."""
