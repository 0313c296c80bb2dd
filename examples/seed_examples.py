"""The worked examples of the seed articles, each beside the article's own figure.

Run: python examples/seed_examples.py   (prints the Markdown table of docs/examples.md)
"""
import edgelstm as el
from edgelstm.examples import EXAMPLES


def main():
    print("| example | source | what | article says | edgelstm counts | note |")
    print("| --- | --- | --- | ---: | ---: | --- |")
    for e in EXAMPLES.values():
        c = el.count(e.spec)
        layers = " + ".join(f"{l.params_total:,}" for l in c.layers)
        counted = f"{c.params:,}" + (f" ({layers})" if len(c.layers) > 1 else "")
        verdict = "" if c.params == e.article_params else "**differs:** "
        print(f"| `{e.name}` | {e.source} | {e.what} | {e.article_params:,} | {counted} | {verdict}{e.note} |")


if __name__ == "__main__":
    main()
