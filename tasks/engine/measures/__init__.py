"""One module per measure, named as the measure: `run(ctx, params)`, the computation of a
measure declared (name, summary, `Params`) in tasks/contract/measures/. tasks/engine/registry.py
joins the two by that name."""
