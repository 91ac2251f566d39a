"""Regenerate pretrain_text.jsonl: original short English prose (stories, facts, arithmetic) for offline runs.

Written for this project from templates with seeded variety, in the TinyStories layout (one ``text`` column).
Run: python config/data/samples/make_pretrain_text.py  (deterministic; rewrites the file next to this script)
"""

from __future__ import annotations

import json
import random
from pathlib import Path

ROWS = 400
NAMES = [
    "Mia",
    "Leo",
    "Ava",
    "Sam",
    "Nora",
    "Ben",
    "Lily",
    "Max",
    "Zoe",
    "Tom",
    "Ella",
    "Finn",
    "Ruby",
    "Omar",
]
ANIMALS = ["cat", "dog", "rabbit", "duck", "fox", "owl", "frog", "mouse", "bear", "goat"]
PLACES = [
    "the park",
    "the beach",
    "the forest",
    "the garden",
    "the farm",
    "the lake",
    "the hill",
    "the market",
]
THINGS = [
    "a red ball",
    "a blue kite",
    "a small boat",
    "a shiny stone",
    "a yellow hat",
    "a wooden box",
    "a map",
]
FEELINGS = ["happy", "proud", "excited", "calm", "curious", "brave", "glad"]
WEATHER = ["sunny", "windy", "rainy", "cloudy", "snowy", "warm"]
FACTS = [
    "The sun is a star, and it gives the Earth light and heat.",
    "Water freezes at zero degrees Celsius and boils at one hundred degrees.",
    "Bees carry pollen from flower to flower, which helps plants make seeds.",
    "A week has seven days, and a year has twelve months.",
    "Plants need water, air and light to grow.",
    "The moon goes around the Earth about once a month.",
    "Fish breathe through gills, which take oxygen from the water.",
    "Trees lose their leaves in autumn and grow new ones in spring.",
    "A triangle has three sides, and a square has four equal sides.",
    "Birds build nests to keep their eggs safe and warm.",
    "The heart pumps blood all around the body.",
    "Rain falls from clouds when tiny drops of water join and grow heavy.",
    "Owls hunt at night and can turn their heads a long way around.",
    "Ice is lighter than water, so it floats on lakes in winter.",
    "Frogs start life as tadpoles that swim with their tails.",
    "The Earth spins once a day, which gives us day and night.",
]
NUMBER_WORDS = ["zero", "one", "two", "three", "four", "five", "six", "seven", "eight", "nine", "ten"]


def story(rng: random.Random) -> str:
    name, friend = rng.sample(NAMES, 2)
    animal, place, thing = rng.choice(ANIMALS), rng.choice(PLACES), rng.choice(THINGS)
    feeling, weather = rng.choice(FEELINGS), rng.choice(WEATHER)
    openings = [
        f"One {weather} day, {name} went to {place} with {friend}.",
        f"{name} lived near {place} with a little {animal}.",
        f"Once upon a time, {name} found {thing} near {place}.",
    ]
    middles = [
        f"They saw a {animal} that looked lost, so they helped it find its way home.",
        f"{friend} wanted to play with {thing}, and {name} said yes.",
        f"The {animal} ran off with {thing}, and they had to chase it around {place}.",
        "It started to rain, so they sat under a big tree and told stories.",
    ]
    endings = [
        f"At the end of the day, {name} felt {feeling}.",
        f"{name} and {friend} promised to come back the next day.",
        f"From then on, the {animal} was their best friend.",
        f"{name} learned that sharing makes everyone {feeling}.",
    ]
    return " ".join([rng.choice(openings), rng.choice(middles), rng.choice(endings)])


def arithmetic(rng: random.Random) -> str:
    name, thing = rng.choice(NAMES), rng.choice(["apples", "books", "shells", "cookies", "pens", "flowers"])
    a, b = rng.randint(1, 9), rng.randint(1, 9)
    if rng.random() < 0.5:
        return f"{name} had {a} {thing} and got {b} more. Now {name} has {a + b} {thing}, because {a} plus {b} is {a + b}."
    big, small = max(a, b) + 2, min(a, b)
    return f"{name} had {big} {thing} and gave {small} away. Now {name} has {big - small} {thing}, because {big} minus {small} is {big - small}."


def counting(rng: random.Random) -> str:
    start = rng.randint(0, 5)
    words = NUMBER_WORDS[start : start + 5]
    return (
        f"Counting up from {words[0]}: {', '.join(words)}. After {words[-1]} comes {NUMBER_WORDS[start + 5]}."
    )


def facts(rng: random.Random) -> str:
    return " ".join(rng.sample(FACTS, rng.randint(2, 3)))


def main() -> None:
    rng = random.Random(20240601)
    makers = [story, story, story, facts, arithmetic, counting]
    seen: set[str] = set()
    rows = []
    while len(rows) < ROWS:
        text = rng.choice(makers)(rng)
        if text not in seen:  # keep the sample free of exact duplicates
            seen.add(text)
            rows.append({"text": text})
    out = Path(__file__).with_name("pretrain_text.jsonl")
    out.write_text("".join(json.dumps(r, ensure_ascii=False) + "\n" for r in rows), encoding="utf-8")


if __name__ == "__main__":
    main()
