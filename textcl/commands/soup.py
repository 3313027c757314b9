"""`textcl soup OUT MODEL MODEL ...`: average the weights of models fine-tuned from the same base
(seeds, settings or checkpoints of one run) into one model ("model soup")."""

from __future__ import annotations

import argparse


def register(subparsers: argparse._SubParsersAction) -> None:
    p = subparsers.add_parser("soup", help="average the weights of models fine-tuned from the same base",
                              description=__doc__.replace("\n", " "))
    p.add_argument("output", help="folder for the averaged model")
    p.add_argument("models", nargs="+", help="model folders (the first must be one) or textcl checkpoint folders")
    p.add_argument("--weights", type=float, nargs="+", default=None,
                   help="mixing weights, one per model (normalised; default uniform)")
    p.add_argument("--trust-remote-code", action="store_true", help="allow models that ship their own code")
    p.set_defaults(func=run)


def run(args: argparse.Namespace) -> int:
    from textcl.soup import average_models  # start-up time: loads torch; `textcl --help` imports this module
    out = average_models(args.models, args.output, args.weights, trust_remote_code=args.trust_remote_code)
    print(f"averaged {len(args.models)} models into {out} (inputs and weights in {out / 'soup.json'})")
    return 0
