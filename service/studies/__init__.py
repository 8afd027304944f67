"""Studies: how well each measure ranks and predicts generalization in the user's own sweep.

The research (SCIENCE.md) says sharpness often fails to predict generalization and tracks the
training settings instead, so a prediction is only made inside a study, a set of related
jobs whose gaps are (mostly) known, and is reported with what it rests on:

    ranking.py     Kendall τ-b, granulated Kendall Ψ, PGDL's conditional mutual information
    baselines.py   trivial baselines from the hyperparameters (1/lr, lr/bs, ‖w‖)
    predictor.py   ridge regression of the gap on the features, nested leave-one-out
    conformal.py   jackknife+ and leave-one-out conformal intervals
    members.py     gaps and features read from the members' job records
    analysis.py    the statistics of every measure and baseline, the predictors, predictions
    verdict.py     the plain-words verdict
    schemas.py     request and response models
    store.py       study records in Redis
    service.py     evaluation of a stored study (cached) and the predictions shown on jobs

Everything here is torch-free (numpy only), so the gateway stays light.
"""
