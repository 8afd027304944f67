"""Reproductions of published findings about sharpness, run through the service's SDK.

Each module trains small networks on a CPU in minutes, measures them with the running service
(`make run`, or SHARPNESS_URL) and prints its table:

    python -m examples.reproductions.learning_rate   # Kaur et al. 2022: larger η, smaller λmax
    python -m examples.reproductions.rescaling       # Dinh et al. 2017: λmax moves, adaptive not
    python -m examples.reproductions.weight_decay    # Granziol 2020: weight decay, sharper nets

`--quick` runs the reduced version the tests run. Each module's `run(client, quick=...)`
returns the rows and `effect_holds(rows)` says whether the published direction was seen.
"""
