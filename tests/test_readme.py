"""The README's links hold: each `module.function` link points at the line where that function is defined (so the
method table's code column cannot drift when a file changes), and every relative link names a file that exists."""
import os
import re

ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
README = open(os.path.join(ROOT, "README.md")).read()


def test_code_links_point_at_their_definitions():
    links = re.findall(r"\[`(\w+)\.(\w+)`\]\((\w+\.py)#L(\d+)\)", README)
    assert len(links) >= 10  # the method table's code column
    for module, name, path, line in links:
        with open(os.path.join(ROOT, path)) as f:
            lines = f.read().splitlines()
        assert path == f"{module}.py" and lines[int(line) - 1].startswith(f"def {name}("), (module, name, line)


def test_relative_links_name_existing_files():
    for target in re.findall(r"\]\(([^)#:]+)(?:#[^)]*)?\)", README):
        assert os.path.exists(os.path.join(ROOT, target)), target
