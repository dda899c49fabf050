"""Generates holdfast.v1 (protobuf messages and gRPC stubs) from the repository's
proto/proto/holdfast/v1/holdfast.proto before the package is built, so the client always
matches the server it is built beside."""

import pathlib

from setuptools import setup
from setuptools.command.build_py import build_py

HERE = pathlib.Path(__file__).resolve().parent
PROTO_ROOT = HERE.parent.parent / "proto" / "proto"
PROTO = PROTO_ROOT / "holdfast" / "v1" / "holdfast.proto"
OUT = HERE / "src"


def generate():
    generated = OUT / "holdfast" / "v1" / "holdfast_pb2.py"
    if not PROTO.exists():
        if generated.exists():
            return  # built from an sdist that carries the generated code
        raise SystemExit(f"cannot find {PROTO}: build the package from a holdfast checkout")
    import grpc_tools
    from grpc_tools import protoc

    include = pathlib.Path(grpc_tools.__file__).parent / "_proto"
    status = protoc.main([
        "grpc_tools.protoc",
        f"-I{PROTO_ROOT}",
        f"-I{include}",
        f"--python_out={OUT}",
        f"--pyi_out={OUT}",
        f"--grpc_python_out={OUT}",
        str(PROTO),
    ])
    if status != 0:
        raise SystemExit(f"protoc failed on {PROTO} ({status})")


class BuildPy(build_py):
    def run(self):
        generate()
        super().run()


setup(cmdclass={"build_py": BuildPy})
