from pathlib import Path

class VLan:
    nr: int
    socket_dir: Path
    def __init__(self, nr: int, tmp_dir: Path) -> None: ...
    def stop(self) -> None: ...
