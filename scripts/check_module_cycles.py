#!/usr/bin/env python3
"""Fails if any module of the `aerobridge` crate imports from a module that imports it back.

Modules are files (`src/net/io.rs` is `net::io`, `src/net/mod.rs` is `net`). An edge A -> B is a
`crate::B…` or `super::…` path in A's code (comments and doc comments are skipped, so doc links
do not count). Two levels are checked:
1. top-level modules (`net`, `fanout`, `metrics`, … each with everything below it): no cycles;
2. inside each directory module, its files (`fanout::hub`, `fanout::worker`, …): no cycles,
   leaving out the directory's own `mod.rs`, which declares and may re-export its files.
Each strongly connected component of more than one node is reported with the edges that close it.

Usage: python3 scripts/check_module_cycles.py [SRC_DIR]   (default: this crate's src; exit 1 on
a cycle)
"""
import pathlib
import re
import sys

SRC = (
    pathlib.Path(sys.argv[1]).resolve()
    if len(sys.argv) > 1
    else pathlib.Path(__file__).resolve().parent.parent / "src"
)


def module_of(path):
    rel = path.relative_to(SRC).with_suffix("")
    parts = list(rel.parts)
    if parts[-1] == "mod":
        parts.pop()
    if parts in (["lib"], ["main"]):
        return ""
    return "::".join(parts)


def code_of(text):
    out = []
    for line in text.splitlines():
        stripped = line.lstrip()
        if stripped.startswith("//"):
            continue
        out.append(line.split(" //")[0])
    return "\n".join(out)


def main():
    files = {module_of(p): p for p in SRC.rglob("*.rs")}
    modules = set(files)

    def resolve(path_parts):
        # The longest prefix that is a module of ours.
        for n in range(len(path_parts), 0, -1):
            cand = "::".join(path_parts[:n])
            if cand in modules:
                return cand
        return None

    file_edges = []
    for mod, path in files.items():
        code = code_of(path.read_text())
        here = mod.split("::") if mod else []
        is_dir_module = path.name == "mod.rs"
        for m in re.finditer(r"\b(crate|super)((?:::[a-z_][a-z0-9_]*)+)", code):
            parts = m.group(2).strip(":").split("::")
            if m.group(1) == "crate":
                target = resolve(parts)
            else:
                # `super` in a/b.rs is a; in a/mod.rs it is the parent of a.
                base = here[:-1]
                target = resolve(base + parts) or ("::".join(base) if base else None)
            if target and target != mod:
                file_edges.append((mod, target))

    failed = False
    top = lambda m: m.split("::")[0]
    levels = [("top-level modules", lambda m: top(m) or None)]
    for d in sorted({top(m) for m in modules if "::" in m}):
        levels.append(
            (f"files of {d}/", lambda m, d=d: m if m.startswith(d + "::") else None)
        )
    total = 0
    for label, node in levels:
        edges = {}
        for a, b in file_edges:
            na, nb = node(a), node(b)
            if na and nb and na != nb:
                edges.setdefault(na, set()).add(nb)
                edges.setdefault(nb, set())
        total += sum(len(e) for e in edges.values())
        for cycle in cycles_of(edges):
            failed = True
            print(f"cycle among {label}: " + ", ".join(cycle))
            for a in cycle:
                for b in sorted(edges[a] & set(cycle)):
                    print(f"  {a} -> {b}")
    if failed:
        sys.exit(1)
    print(f"no import cycles: {len(modules)} modules, {total} edges checked")


def cycles_of(edges):
    # Tarjan's strongly connected components.
    index, low, stack, on, comps = {}, {}, [], set(), []
    counter = [0]

    def visit(v):
        index[v] = low[v] = counter[0]
        counter[0] += 1
        stack.append(v)
        on.add(v)
        for w in edges[v]:
            if w not in index:
                visit(w)
                low[v] = min(low[v], low[w])
            elif w in on:
                low[v] = min(low[v], index[w])
        if low[v] == index[v]:
            comp = []
            while True:
                w = stack.pop()
                on.discard(w)
                comp.append(w)
                if w == v:
                    break
            comps.append(comp)

    sys.setrecursionlimit(10000)
    for v in sorted(edges):
        if v not in index:
            visit(v)
    return [sorted(c) for c in comps if len(c) > 1]


if __name__ == "__main__":
    main()
