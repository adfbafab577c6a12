"""Command-line options that several benchmark scripts share."""


def add_activations_option(parser, *, required=True, help=None):
    """``--activations ACTIVATIONS_DIR``: an activation set on disk (no default: a
    machine's data directory is the reader's to give)."""
    parser.add_argument(
        "--activations", required=required, default=None, metavar="ACTIVATIONS_DIR",
        help=help or "an activation set (written by extract_activations or sparsegap activations)",
    )  # fmt: skip


def add_int_options(parser, **defaults):
    """One integer option per keyword: ``n_train=100_000`` adds ``--n-train`` (default
    100000)."""
    for name, default in defaults.items():
        parser.add_argument("--" + name.replace("_", "-"), type=int, default=default)
