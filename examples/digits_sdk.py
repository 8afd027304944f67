"""examples/digits.py with the SDK: train an MLP on scikit-learn's digits, measure its sharpness.

    make run                                  # Redis, a worker and the gateway
    .venv/bin/python examples/digits_sdk.py   # SHARPNESS_URL / SHARPNESS_API_KEY if not local

`client.measure` exports the module (torch.export, eval mode, dynamic batch), packs the arrays
as an .npz, uploads both, submits one job, shows each measure's progress and returns the job.
"""

from __future__ import annotations

from digits_mlp import load, train

from sharpness_client import Client
from sharpness_client.errors import APIConnectionError


def main() -> None:
    with Client() as client:  # SHARPNESS_URL, else http://127.0.0.1:8000
        try:
            client.queue.get()
        except APIConnectionError as e:
            raise SystemExit(
                f"could not reach the service at {client.base_url} ({e}); start it with "
                "`make run`, or give its address with SHARPNESS_URL"
            ) from None

        x, y = load()
        model = train(x, y)
        job = client.measure(
            model,
            (x, y),
            measures=["lambda_max", "trace", "adaptive_sharpness"],
            params={"trace": {"num_hvps": 150}, "adaptive_sharpness": {"rho": 0.002}},
            batch_size=512,
            labels={"example": "digits"},
            progress=True,
        )
    ev = job.evaluation or {}
    print(f"accuracy {ev.get('accuracy', float('nan')):.3f}, loss {ev.get('loss', 0):.4f}")
    for name, res in job.results.items():
        print(f"{name:>20}: {res.value:.6g}  ({res.hvps} HVPs, {res.seconds or 0:.1f} s)")


if __name__ == "__main__":
    main()
