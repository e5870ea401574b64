"""Deterministic prose for RAG tests: each town paragraph holds facts found nowhere else."""

TOWNS = [
    ("Arlen", "copper bells", "the spring tide", "a lighthouse painted green"),
    ("Brisk", "blue wool", "the first frost", "a bridge of seven arches"),
    ("Corvale", "pear cider", "midsummer night", "an observatory on the hill"),
    ("Dunmere", "salt fish", "the autumn fair", "a library with a glass roof"),
    ("Elsby", "clay pipes", "the winter market", "a clock tower that runs slow"),
    ("Fenwick", "rye bread", "the harvest moon", "a mill with red sails"),
]


def town_paragraph(name: str, trade: str, festival: str, landmark: str) -> str:
    return (
        f"The town of {name} is known for its {trade}, which merchants carry to every port on the coast. "
        f"Each year the people of {name} hold their great festival at {festival}, when the streets fill "
        f"with music and lanterns. Visitors to {name} always remember {landmark}, which the town council "
        f"repairs every decade with money raised from the trade in {trade}."
    )


def towns_text(towns: list[tuple[str, str, str, str]] = TOWNS) -> str:
    return "\n\n".join(town_paragraph(*town) for town in towns)


def town_record(copy: int, name: str, trade: str, festival: str, landmark: str) -> str:
    """Copy `copy` of a town's record: a census sentence found nowhere else, then the town's paragraph
    (shared by every record of that town)."""
    return (
        f"Record {copy} of {name} notes that the census counted {1000 + 37 * copy} households in "
        f"{1700 + 9 * copy}. " + town_paragraph(name, trade, festival, landmark)
    )
