"""Key management and crypto node commands: ``keys ceremony``, ``keys list``, ``keys rotate``,
and ``crypto --lmk-prompt`` (the LMK entered by its custodians at start)."""

from __future__ import annotations

import argparse
import asyncio
import getpass
from collections.abc import Callable
from pathlib import Path
from typing import Any

from common.ids import branch_ids
from common.settings import Settings


def register(commands: argparse._SubParsersAction[argparse.ArgumentParser]) -> None:
    """Add the key actions to ``keys`` and the LMK prompt to ``crypto``."""
    actions = _actions_of(commands.choices["keys"])
    ceremony = actions.add_parser(
        "ceremony", help="create LMK components for custodians; print them with their KCVs"
    )
    ceremony.add_argument("--components", type=int, default=2, help="how many (default 2, >= 2)")
    ceremony.add_argument(
        "--out-dir", type=Path, help="write one component file each here instead of printing"
    )
    ceremony.set_defaults(run=_ceremony)

    listing = actions.add_parser("list", help="the stored keys: usage, version, KCV (no keys)")
    listing.add_argument("--data-dir", type=Path, help="where the keys are (default ./var)")
    listing.set_defaults(run=_list)

    rotate = actions.add_parser("rotate", help="add a PVK or BDK generation and make it current")
    rotate.add_argument("kind", choices=["pvk", "bdk"])
    rotate.add_argument("--data-dir", type=Path, help="where the keys are (default ./var)")
    rotate.add_argument("--branches", type=int, default=None, help="branches to reissue pads to")
    rotate.add_argument("--terminals", type=int, default=None, help="terminals per branch")
    rotate.set_defaults(run=_rotate)

    crypto = commands.choices["crypto"]
    crypto.add_argument(
        "--lmk-prompt",
        type=int,
        metavar="N",
        help="ask N custodians for their LMK components and KCVs instead of reading the "
        "training setup's component files",
    )
    crypto.set_defaults(run=_crypto)


def _actions_of(parser: argparse.ArgumentParser) -> argparse._SubParsersAction[Any]:
    for action in parser._actions:
        if isinstance(action, argparse._SubParsersAction):
            return action
    raise LookupError("parser has no sub-commands")


def _data_dir(args: argparse.Namespace, settings: Settings) -> Path:
    return args.data_dir or settings.data_dir or Path("var")


def _ceremony(args: argparse.Namespace, settings: Settings) -> int:
    from crypto_node.keys import write_private
    from crypto_node.lmk import MIN_COMPONENTS, Component, Lmk, component_document

    if args.components < MIN_COMPONENTS:
        raise SystemExit(f"an LMK needs at least {MIN_COMPONENTS} components")
    components = [Component.generate() for _ in range(args.components)]
    for number, component in enumerate(components, start=1):
        if args.out_dir is not None:
            args.out_dir.mkdir(parents=True, exist_ok=True)
            path = args.out_dir / f"component-{number}.json"
            write_private(path, component_document(number, component))
            print(f"component {number}: written to {path}  KCV {component.kcv}")
        else:
            text = component.value.hex().upper()
            groups = " ".join(text[i : i + 4] for i in range(0, len(text), 4))
            print(f"component {number}: {groups}  KCV {component.kcv}")
    print(f"LMK KCV {Lmk(components).kcv}")
    return 0


def _list(args: argparse.Namespace, settings: Settings) -> int:
    from crypto_node.keys import read_key_store
    from crypto_node.tr31 import KeyBlockHeader

    document = read_key_store(_data_dir(args, settings))
    current = document.get("current", {})
    print(f"LMK KCV {document.get('lmk_kcv')}")
    print(f"{'name':<16} {'usage':<5} {'alg':<3} {'mode':<4} {'ver':<3} {'exp':<3} {'KCV':<6}")
    for entry in document.get("keys", []):
        header = KeyBlockHeader.parse(str(entry["block"]))
        name = str(entry["name"])
        version = current.get("pvk")
        currents = {f"bdk/{current.get('bdk')}", f"pvk-ibm/{version}", f"pvk-visa/{version}"}
        mark = "  current" if name in currents else ""
        print(
            f"{name:<16} {header.usage:<5} {header.algorithm:<3} {header.mode_of_use:<4} "
            f"{header.version:<3} {header.exportability:<3} {entry['kcv']:<6}{mark}"
        )
    return 0


def _rotate(args: argparse.Namespace, settings: Settings) -> int:
    from crypto_node.keys import rotate_keys

    count = args.branches or settings.branches
    terminals = args.terminals or settings.terminals
    keys = rotate_keys(_data_dir(args, settings), args.kind, branch_ids(count), terminals)
    if args.kind == "pvk":
        print(f"PVK generation {keys.key_version} is current; older ones still verify")
    else:
        print(f"BDK {keys.bdk_id} is current; PIN pads reissued; older BDKs still serve old pads")
    return 0


def _crypto(args: argparse.Namespace, settings: Settings) -> int:
    from branchnet.cli import _amqp_url
    from branchnet.nodes import serve_crypto
    from crypto_node.lmk import Component, Lmk

    lmk = None
    if args.lmk_prompt:
        ask: Callable[[str], str] = getpass.getpass
        components = [
            Component.entered(ask(f"LMK component {n}: "), input(f"KCV of component {n}: "))
            for n in range(1, args.lmk_prompt + 1)
        ]
        lmk = Lmk(components)
        print(f"LMK formed, KCV {lmk.kcv}")
    asyncio.run(serve_crypto(_amqp_url(settings), _data_dir(args, settings), lmk=lmk))
    return 0
