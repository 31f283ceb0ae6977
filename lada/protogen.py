"""Generate the Python gRPC stubs in lada/v1/ from protos/lada/v1/*.proto.

One command (`make protos`, i.e. `python -m lada.protogen`) writes them; the stale-stubs
test regenerates into a temporary directory and compares byte for byte.
"""

from __future__ import annotations

import sys
from pathlib import Path

REPO_ROOT = Path(__file__).resolve().parent.parent
PROTO_ROOT = REPO_ROOT / "protos"
STUB_PACKAGE = "lada/v1"


def proto_files() -> list[Path]:
    return sorted((PROTO_ROOT / STUB_PACKAGE).glob("*.proto"))


def generate(out_dir: Path) -> list[Path]:
    """Run protoc (from grpcio-tools) over every proto; return the files written."""
    from grpc_tools import protoc  # imported lazily: only needed at generation time

    out_dir.mkdir(parents=True, exist_ok=True)
    include = str(Path(protoc.__file__).parent / "_proto")
    args = [
        "protoc",
        f"-I{PROTO_ROOT}",
        f"-I{include}",
        f"--python_out={out_dir}",
        f"--pyi_out={out_dir}",
        f"--grpc_python_out={out_dir}",
        *[str(p.relative_to(PROTO_ROOT)) for p in proto_files()],
    ]
    if protoc.main(args) != 0:
        raise RuntimeError("protoc failed: " + " ".join(args))
    package_dir = out_dir / STUB_PACKAGE
    return sorted(p for p in package_dir.iterdir() if p.name.endswith((".py", ".pyi")))


def main() -> int:
    written = generate(REPO_ROOT)
    for path in written:
        print(path.relative_to(REPO_ROOT))
    return 0


if __name__ == "__main__":
    sys.exit(main())
