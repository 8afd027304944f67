"""Study statistics: how well each measure ranks and predicts generalization in the user's own
sweep.

The research (docs/science.md) says sharpness often fails to predict generalization and
tracks the training settings instead, so a prediction is only made inside a study, a set of
related jobs whose gaps are (mostly) known, and is reported with what it rests on:

    results.py        the plain shapes read and written (a member entry, the analysis)
    members.py        gaps and features read from the members' job records
    units.py          member jobs on one model merged; groups held out together
    ranking.py        Kendall τ-b, granulated Kendall Ψ, PGDL's conditional mutual information
    significance.py   permutation and bootstrap tests, Holm's correction, χ²
    baselines.py      trivial baselines from the hyperparameters (1/lr, lr/bs, ‖w‖)
    features.py       each measure's and baseline's statistics against the gaps
    feature_tests.py  whether each ranking is beyond chance and beyond the best baseline
    predictor.py      ridge regression of the gap on the features, nested leave-one-out
    conformal.py      jackknife+ and leave-one-out conformal intervals
    predictions.py    the predictors and each member's prediction with its interval
    verdict.py        the plain-words verdict
    analysis.py       all of the above for one study

A library: numpy only, no torch, no web framework, no Redis. The gateway's service/studies/
stores studies, runs `analysis.analyse` off the event loop and turns its dataclasses into the
API's response models.
"""
