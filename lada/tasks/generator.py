"""Seeded generator of multi-step arithmetic word problems with step-by-step references.

Four public domains (`DOMAINS`, what `domains=all` means) and one client-only domain
(`CLIENT_DOMAINS`: `units`, counts given in dozens / pairs / weeks, whose factors 12 / 2 / 7
appear nowhere in the question: knowledge that only the clients' data carries, never the
LLM's training corpus). Each problem has 1..6 reasoning steps (one equation line per step)
and an operand `scale`. Same arguments -> same problems, same IDs, in the same order, on
every machine.
"""

from __future__ import annotations

import random
from collections.abc import Callable, Sequence

from lada.tasks.problem import ANSWER_MARK, Problem, content_id

DOMAINS: tuple[str, ...] = ("purchases", "rates", "percentages", "comparisons")
CLIENT_DOMAINS: tuple[str, ...] = ("units",)  # in clients' data and the pool, not the LLM's
ALL_DOMAINS: tuple[str, ...] = DOMAINS + CLIENT_DOMAINS
MIN_STEPS, MAX_STEPS = 1, 6

_PEOPLE = (
    ("Ann", "she"),
    ("Ben", "he"),
    ("Cara", "she"),
    ("Dan", "he"),
    ("Eva", "she"),
    ("Finn", "he"),
    ("Gina", "she"),
    ("Hugo", "he"),
    ("Ivy", "she"),
    ("Jack", "he"),
    ("Kim", "she"),
    ("Leo", "he"),
)
_GOODS = ("pen", "book", "cup", "hat", "lamp", "ball", "kite", "bag", "shirt", "clock")
_WORK = (
    ("packs", "packed", "boxes"),
    ("bakes", "baked", "cakes"),
    ("paints", "painted", "cards"),
    ("picks", "picked", "apples"),
    ("folds", "folded", "shirts"),
    ("sews", "sewed", "bags"),
)
_THINGS = ("marbles", "stickers", "coins", "shells", "stamps", "cards")

Steps = list[tuple[str, int]]  # (equation "a+b", result)


def _eq(steps: Steps, expr: str, value: int) -> int:
    steps.append((expr, value))
    return value


def _purchases(rng: random.Random, d: int, s: int) -> tuple[str, Steps]:
    """Running total: start money, then d buys/earnings, ask what is left."""
    name, pron = rng.choice(_PEOPLE)
    money = rng.randint(20, 99) * s
    lines, steps, total = [f"{name} has ${money}."], [], money
    for _ in range(d):
        if total >= 2 and rng.random() < 0.75:
            price = rng.randint(1, min(total, 30 * s))
            lines.append(f"{pron.capitalize()} buys a {rng.choice(_GOODS)} for ${price}.")
            total = _eq(steps, f"{total}-{price}", total - price)
        else:
            pay = rng.randint(2, 30 * s)
            lines.append(f"{pron.capitalize()} earns ${pay}.")
            total = _eq(steps, f"{total}+{pay}", total + pay)
    lines.append(f"How many dollars does {pron} have now?")
    return " ".join(lines), steps


def _rates(rng: random.Random, d: int, s: int) -> tuple[str, Steps]:
    """Work rates: per-hour rates (explicit, or implied by a past total) times hours, summed."""
    verb, past_verb, noun = rng.choice(_WORK)
    workers = rng.sample(_PEOPLE, k=(d + 1) // 2 if d % 2 else d // 2)
    lines, steps, parts = [], [], []
    for i, (name, pron) in enumerate(workers):
        rate, hours = rng.randint(2, 9 * s), rng.randint(2, 9)
        if i == 0 and d % 2 == 0:
            past = rng.randint(2, 5)
            lines.append(
                f"Yesterday {name} {past_verb} {rate * past} {noun} in {past} "
                f"hours. Today {pron} works {hours} hours at that pace."
            )
            _eq(steps, f"{rate * past}/{past}", rate)
        else:
            lines.append(f"{name} {verb} {rate} {noun} per hour for {hours} hours.")
        parts.append(_eq(steps, f"{rate}*{hours}", rate * hours))
    total = parts[0]
    for part in parts[1:]:
        total = _eq(steps, f"{total}+{part}", total + part)
    who = "they" if len(workers) > 1 else workers[0][1]
    return " ".join(lines) + f" How many {noun} do {who} make today?".replace(
        "do she", "does she"
    ).replace("do he", "does he"), steps


def _percentages(rng: random.Random, d: int, s: int) -> tuple[str, Steps]:
    """Percent of a price (tax or discount), then quantities, shipping and coupons."""
    name, pron = rng.choice(_PEOPLE)
    item = rng.choice(_GOODS)
    price, pct = rng.randint(1, 10 * s) * 20, rng.choice((10, 20, 25, 50))
    steps: Steps = []
    cut = _eq(steps, f"{pct}% of {price}", price * pct // 100)
    if d == 1:
        return (
            f"A {item} costs ${price}. The tax is {pct}% of the price. How many dollars is the tax?"
        ), steps
    lines = [f"{name} wants a {item} that costs ${price}. It is {pct}% off."]
    total = _eq(steps, f"{price}-{cut}", price - cut)
    bought = False
    for _ in range(d - 2):
        roll = rng.random()
        if not bought and total <= 99 * s and roll < 0.4:
            qty, bought = rng.randint(2, 3), True
            lines.append(f"{name} buys {qty} of them.")
            total = _eq(steps, f"{total}*{qty}", total * qty)
        elif roll < 0.7 or total < 3:
            fee = rng.randint(2, 15 * s)
            lines.append(f"Shipping costs ${fee}.")
            total = _eq(steps, f"{total}+{fee}", total + fee)
        else:
            coupon = rng.randint(1, min(total - 1, 20 * s))
            lines.append(f"{pron.capitalize()} uses a ${coupon} coupon.")
            total = _eq(steps, f"{total}-{coupon}", total - coupon)
    lines.append(f"How many dollars does {name} pay?")
    return " ".join(lines), steps


def _relation(rng: random.Random, value: int, s: int) -> tuple[str, str, int]:
    """One comparison link: (phrase, equation, new value)."""
    options = ["more", "more"]
    if value > 3:
        options.append("fewer")
    if value <= 49 * s:
        options.append("twice")
    if value % 2 == 0 and value >= 4:
        options.append("half")
    kind = rng.choice(options)
    if kind == "more":
        k = rng.randint(2, 20 * s)
        return f"{k} more than", f"{value}+{k}", value + k
    if kind == "fewer":
        k = rng.randint(1, min(value - 1, 20 * s))
        return f"{k} fewer than", f"{value}-{k}", value - k
    if kind == "twice":
        return "twice as many as", f"{value}*2", value * 2
    return "half as many as", f"{value}/2", value // 2


def _comparisons(rng: random.Random, d: int, s: int) -> tuple[str, Steps]:
    """Chain of 'k more / fewer / twice / half as many as', then the last person against the
    first: a sum or a difference of the chain's end and the count the question states.

    Not against a random earlier person: the path never names whose value a line holds, and
    the 1.1M demo LLM failed 95 of its 97 wrong validation answers on exactly that lookup
    while every chain line was right (docs/zoo.md, attempt 12)."""
    thing = rng.choice(_THINGS)
    links = d if d == 1 else d - 1
    people = [p for p, _ in rng.sample(_PEOPLE, k=links + 1)]
    value = rng.randint(5, 40 * s)
    lines, steps, values = [f"{people[0]} has {value} {thing}."], [], [value]
    for prev, who in zip(people, people[1:], strict=False):
        phrase, expr, value = _relation(rng, value, s)
        lines.append(f"{who} has {phrase} {prev}.")
        values.append(_eq(steps, expr, value))
    if d == 1:
        return " ".join(lines) + f" How many {thing} does {people[1]} have?", steps
    rng.randrange(0, len(people) - 1)  # the old random partner: drawn so later problems keep
    # their numbers (every other domain's test problems are as before the reshape)
    a, b = people[-1], people[0]
    if rng.random() < 0.5:
        _eq(steps, f"{values[-1]}+{values[0]}", values[-1] + values[0])
        ask = f"How many {thing} do {a} and {b} have together?"
    else:
        hi, lo = (-1, 0) if values[-1] >= values[0] else (0, -1)
        _eq(steps, f"{values[hi]}-{values[lo]}", values[hi] - values[lo])
        ask = f"How many more {thing} does {people[hi]} have than {people[lo]}?"
    return " ".join(lines) + " " + ask, steps


# (unit, factor, things, gain verbs, loss verbs): "3 dozen eggs" = 3*12 eggs, never said.
_UNITS = (
    ("dozen", 12, ("cookies", "rolls", "muffins"), ("bakes", "buys"), ("sells", "gives away")),
    ("pairs of", 2, ("socks", "gloves", "shoes"), ("buys", "gets"), ("loses", "gives away")),
    ("weeks of", 7, ("holiday", "leave"), ("earns", "is given"), ("uses", "gives up")),
)


def _units(rng: random.Random, d: int, s: int) -> tuple[str, Steps]:
    """Counts in dozens / pairs / weeks (implicit factor), then gains and losses."""
    unit, factor, things, gains, losses = rng.choice(_UNITS)
    thing = rng.choice(things)
    name, pron = rng.choice(_PEOPLE)
    days = factor == 7  # "weeks of holiday": counted in days

    def amount(k: int, converted: bool) -> str:
        if days:
            return f"{k} weeks of {thing}" if converted else f"{k} days of {thing}"
        return f"{k} {unit} {thing}" if converted else f"{k} {thing}"

    k = rng.randint(2, (6 if factor == 12 else 9) * s)
    lines, steps = [f"{name} has {amount(k, True)}."], []
    total = _eq(steps, f"{k}*{factor}", k * factor)
    left = d - 1
    while left:
        converted = left >= 2 and rng.random() < 0.5
        k = rng.randint(2, (4 if factor == 12 else 6) * s) if converted else rng.randint(2, 15 * s)
        value = k * factor if converted else k
        lose = value < total and rng.random() < 0.5
        verb = rng.choice(losses if lose else gains)
        lines.append(f"{pron.capitalize()} {verb} {amount(k, converted)}.")
        if converted:
            _eq(steps, f"{k}*{factor}", value)
        total = _eq(
            steps,
            f"{total}-{value}" if lose else f"{total}+{value}",
            total - value if lose else total + value,
        )
        left -= 2 if converted else 1
    ask = f"How many days of {thing}" if days else f"How many {thing}"
    lines.append(f"{ask} does {name} have now?")
    return " ".join(lines), steps


_BUILDERS: dict[str, Callable[[random.Random, int, int], tuple[str, Steps]]] = {
    "purchases": _purchases,
    "rates": _rates,
    "percentages": _percentages,
    "comparisons": _comparisons,
    "units": _units,
}


def make_problem(domain: str, rng: random.Random, steps: int, scale: int = 1) -> Problem:
    """One problem of `domain` with exactly `steps` equation lines."""
    question, eqs = _BUILDERS[domain](rng, steps, scale)
    answer = str(eqs[-1][1])
    reference = "\n".join(f"{expr}={value}" for expr, value in eqs) + f"\n{ANSWER_MARK} {answer}"
    return Problem(
        id=content_id("syn", question, reference),
        question=question,
        reference=reference,
        answer=answer,
        domain=domain,
        difficulty=len(eqs),
    )


def generate_problems(
    n: int,
    seed: int,
    domains: Sequence[str] = DOMAINS,
    steps: tuple[int, int] = (MIN_STEPS, MAX_STEPS),
    scale: int = 1,
    step_weights: Sequence[float] | None = None,
    domain_weights: Sequence[float] | None = None,
) -> list[Problem]:
    """`n` distinct problems; domains round-robin (or by `domain_weights`), steps uniform.

    A smaller `n` with the same other arguments yields a prefix of a larger one.
    """
    unknown = [d for d in domains if d not in _BUILDERS]
    if unknown:
        raise ValueError(f"unknown domain(s) {unknown}; valid: {list(ALL_DOMAINS)}")
    lo, hi = steps
    if not MIN_STEPS <= lo <= hi <= MAX_STEPS:
        raise ValueError(f"steps must lie in {MIN_STEPS}..{MAX_STEPS}, got {lo}..{hi}")
    rng = random.Random(f"lada-synthetic:{seed}")
    levels = list(range(lo, hi + 1))
    out: list[Problem] = []
    seen: set[str] = set()
    attempts = 0
    while len(out) < n:
        attempts += 1
        if attempts > 50 * n + 1000:
            raise ValueError(f"cannot generate {n} distinct problems with these settings")
        if domain_weights is None:
            domain = domains[len(out) % len(domains)]
        else:
            domain = rng.choices(list(domains), weights=domain_weights)[0]
        level = rng.choices(levels, weights=step_weights)[0] if step_weights else rng.choice(levels)
        problem = make_problem(domain, rng, level, scale)
        if problem.id not in seen:
            seen.add(problem.id)
            out.append(problem)
    return out
