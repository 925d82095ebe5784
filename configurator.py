"""
Config overrides, the nanoGPT way: the script's plain globals are the config. Then
  python train.py config/countdown_qwen0.5b.py --lr=1e-6 --algo=grpo
runs the config file (plain Python assignments) and then the --key=value pairs. Every key must
already exist and keep its type (an int may become a float; a bare --flag sets a bool to True);
anything else is a one-line error.
"""
import ast
import traceback
from ast import literal_eval


# Keys that were renamed: the old spelling still works, read as what it means now
RENAMED = {"scale_std": ("scale_rewards", {True: "group", False: "none"})}  # scale_std=False is Dr.GRPO's 'none'


def _check(cfg, key, value, source):
    if key in RENAMED and key not in cfg and RENAMED[key][0] in cfg:
        new, meaning = RENAMED[key]
        if type(value) is not bool:
            raise SystemExit(f"{source}: {key} (now {new}) must be True or False, got {value!r}")
        return _check(cfg, new, meaning[value], source)
    if key not in cfg:
        raise SystemExit(f"{source}: unknown config key {key!r} (see the constants at the top of the script)")
    old = cfg[key]
    if isinstance(old, float) and type(value) is int:
        value = float(value)
    if type(value) is not type(old):
        raise SystemExit(f"{source}: {key} must be {type(old).__name__} like {old!r}, got {value!r}")
    return key, value


def renamed(config):
    """A config saved before a key was renamed (a run's settings, a shipped results file), in today's names."""
    out = dict(config)
    for key, (new, meaning) in RENAMED.items():
        if key in out:
            out.setdefault(new, meaning[out.pop(key)])
    return out


def script_defaults(path):
    """The constants a script sets at its top level (NAME = a literal), read without running it: another script
    (eval.py) takes train.py's defaults from train.py itself instead of restating them."""
    with open(path) as f:
        tree = ast.parse(f.read())
    out = {}
    for node in tree.body:
        if isinstance(node, ast.Assign) and len(node.targets) == 1 and isinstance(node.targets[0], ast.Name):
            try:
                out[node.targets[0].id] = literal_eval(node.value)
            except ValueError:  # an expression (device = "cuda" if ... else ...): not a plain default
                pass
    return out


def configure(cfg, argv):
    """Applies config files and --key=value overrides from argv to the dict `cfg` (a module's
    globals()). Only keys holding int/float/bool/str values are configurable."""
    keys = {k: v for k, v in cfg.items() if not k.startswith("_") and type(v) in (int, float, bool, str)}
    for arg in argv:
        if not arg.startswith("--"):  # a config file
            scope = {}
            try:
                with open(arg) as f:
                    code = compile(f.read(), arg, "exec")  # errors then name the file, not <string>
                exec(code, {}, scope)  # the user's own config file, not untrusted input
            except OSError as e:
                raise SystemExit(f"cannot read config file {arg!r}: {e.strerror}")
            except SyntaxError as e:
                raise SystemExit(f"config file {arg}, line {e.lineno}: {e.msg}")
            except Exception as e:  # 1/0, a NameError, ...: the line of the file it came from
                line = next((t.lineno for t in reversed(traceback.extract_tb(e.__traceback__)) if t.filename == arg), "?")
                raise SystemExit(f"config file {arg}, line {line}: {type(e).__name__}: {e}")
            for key, value in scope.items():
                if not key.startswith("_"):
                    key, value = _check(keys, key, value, arg)
                    cfg[key] = keys[key] = value
            continue
        key, sep, text = arg[2:].partition("=")
        if not sep and isinstance(keys.get(key, key in RENAMED), bool):
            sep, text = "=", "True"  # --quick is --quick=True
        if not sep:
            raise SystemExit(f"bad argument {arg!r}: use --key=value")
        try:
            value = literal_eval(text)
        except (ValueError, SyntaxError):
            value = text  # a bare string such as --algo=grpo
        if isinstance(keys.get(key), str):
            value = text  # strings stay strings, even --out_dir=123
        key, value = _check(keys, key, value, arg)
        cfg[key] = keys[key] = value
    return {k: cfg[k] for k in keys}
