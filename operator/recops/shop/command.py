"""`recops data ...`: work with training data. `recops data synth` writes a synthetic shop."""

from __future__ import annotations

import argparse
import sys


def add_arguments(parser: argparse.ArgumentParser) -> None:
    sub = parser.add_subparsers(dest="data_command", required=True, metavar="ACTION")
    synth = sub.add_parser(
        "synth",
        help="write a synthetic shop (catalogue and event log)",
        description="Write <out>/events.<ext> and <out>/catalogue.<ext>: a synthetic shop whose clicks, "
        "add-to-carts and purchases follow a hidden relevance, with a preference shift from --shift-day.",
    )
    synth.add_argument("--out", required=True, help="directory or prefix (path, file://, pvc://, s3://)")
    synth.add_argument("--format", choices=("parquet", "jsonl"), default="parquet", help="file format (default parquet)")
    synth.add_argument("--users", type=int, default=200, help="number of users (default 200)")
    synth.add_argument("--products", type=int, default=300, help="catalogue size (default 300)")
    synth.add_argument("--sessions", type=int, default=1000, help="search sessions, 10 impressions each (default 1000)")
    synth.add_argument("--days", type=int, default=14, help="days the sessions spread over (default 14)")
    synth.add_argument(
        "--shift-day", type=int, default=None, help="from this day (0-based) on, users' tastes change (default: never)"
    )
    synth.add_argument("--queries", type=int, default=None, help="distinct queries (default: products / 3)")
    synth.add_argument("--seed", type=int, default=0, help="random seed (default 0)")
    synth.add_argument(
        "--partition-by-day", action="store_true", help="write events as events/dt=YYYY-MM-DD/part-0.<ext>"
    )
    from recops.shop import traffic

    traffic.add_arguments(sub.add_parser(
        "traffic", help="send shoppers' searches and feedback from the synthetic shop to a running recops serve",
        description=(traffic.__doc__ or "").split("\n\n")[0],
    ))


def _synth(args: argparse.Namespace) -> int:
    from recops.shop.synth import generate_shop, write_shop

    for name in ("users", "products", "sessions", "days"):
        if getattr(args, name) < 1:
            print(f"recops data synth: --{name} must be at least 1", file=sys.stderr)
            return 2
    shop = generate_shop(
        users=args.users,
        products=args.products,
        sessions=args.sessions,
        days=args.days,
        shift_day=args.shift_day,
        seed=args.seed,
        queries=args.queries,
    )
    written = write_shop(shop, args.out, args.format, partition_by_day=args.partition_by_day)
    counts = shop["events"]["event"].value_counts()
    summary = ", ".join(f"{counts.get(name, 0)} {name}s" for name in ("impression", "click", "add_to_cart", "purchase"))
    print(f"wrote {len(shop['events'])} events ({summary}) and {len(shop['catalogue'])} products:")
    for uri in written if len(written) <= 6 else [*written[:3], "...", written[-1]]:
        print(f"  {uri}")
    events = f"{args.out.rstrip('/')}/events" + ("" if args.partition_by_day else f".{args.format}")
    print(f"train on it with dataset.uri: {events}")
    return 0


def main(args: argparse.Namespace) -> int:
    if args.data_command == "synth":
        return _synth(args)
    if args.data_command == "traffic":
        from recops.shop import traffic

        return traffic.main(args)
    raise AssertionError(args.data_command)
