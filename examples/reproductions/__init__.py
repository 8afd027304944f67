"""Reproductions of published findings about sharpness, run through the service's SDK.

Each module trains small networks on a CPU in minutes, measures them with the running service
(`make run`, or SHARPNESS_URL) and prints its table:

    python -m examples.reproductions.learning_rate   # Kaur et al. 2022: larger η, smaller λmax
    python -m examples.reproductions.rescaling       # Dinh et al. 2017: λmax moves, adaptive not
    python -m examples.reproductions.weight_decay    # Granziol 2020: weight decay, sharper nets

`--quick` runs the reduced version the tests run (three seeds). Each module's
`run(client, quick=...)` returns one row per network, `summary(rows)` (where there is one) the
mean and 95% interval over seeds, `report(rows)` the printed verdicts, and `effect_holds(rows)`
whether the published claim was seen, decided over the seeds.
"""
