"""Target texts that are not Alpaca outputs, written for e2p, for the users' case: inverting their own texts.

05_eval scores every method on these too (their prompts are unknown, so there is no "original prompt" row). Kinds
vary on purpose: code, lists, poems, facts, advice, classification labels, short replies, emails, definitions.
OWN_TARGETS is the test set; OWN_VALIDATION_TARGETS is a disjoint set of the same kinds (other topics), so that decision
rules and thresholds can be chosen on own texts and then reported on the test texts they were never tuned on
(docs/experiments.md#one-call-margin-on-own-texts).
"""

from __future__ import annotations

import pandas as pd

OWN_TARGETS: list[tuple[str, str]] = [
    ("code", "def is_palindrome(s):\n    s = ''.join(c.lower() for c in s if c.isalnum())\n    return s == s[::-1]"),
    ("code", "SELECT customer_id, SUM(amount) AS total FROM orders GROUP BY customer_id ORDER BY total DESC LIMIT 5;"),
    (
        "code",
        "for i in range(1, 101):\n    print('FizzBuzz' if i % 15 == 0 else 'Fizz' if i % 3 == 0 else "
        "'Buzz' if i % 5 == 0 else i)",
    ),
    ("code", "const sum = numbers.reduce((total, n) => total + n, 0);"),
    ("code", 'git checkout -b feature/login && git add . && git commit -m "Add login form"'),
    ("code", "import pandas as pd\ndf = pd.read_csv('sales.csv')\nprint(df.groupby('region')['revenue'].mean())"),
    ("code", "function reverseString(str) {\n  return str.split('').reverse().join('');\n}"),
    (
        "code",
        "class Stack:\n    def __init__(self):\n        self.items = []\n    def push(self, item):\n"
        "        self.items.append(item)\n    def pop(self):\n        return self.items.pop()",
    ),
    (
        "list",
        "1. Preheat the oven to 180°C.\n2. Mix flour, sugar and eggs.\n3. Pour into a tin.\n4. Bake for 30 minutes.",
    ),
    ("list", "- Passport\n- Phone charger\n- Sunscreen\n- Swimsuit\n- Travel adapter"),
    ("list", "Mercury, Venus, Earth, Mars, Jupiter, Saturn, Uranus, Neptune."),
    ("list", "Three benefits of regular exercise: better sleep, lower stress, and a stronger heart."),
    ("list", "Red, orange, yellow, green, blue, indigo and violet."),
    ("list", "Apples, bananas, spinach, oats, Greek yoghurt and almonds."),
    ("list", "1. Define the problem. 2. Gather data. 3. Build a model. 4. Evaluate it. 5. Deploy and monitor."),
    (
        "poem",
        "The morning fog lifts slow and grey,\nthe harbour wakes to gulls at play,\nand boats that slept "
        "beside the quay\nturn their bows towards the sea.",
    ),
    ("poem", "Autumn leaves fall down,\nwhispering in golden light,\nthe year breathes its last."),
    ("poem", "Roses are red, violets are blue, the code finally compiled, and so can you."),
    ("poem", "Snow on the mountain,\nsilence in the pine forest,\na fox leaves its tracks."),
    ("poem", "I wandered through the city streets at night, where neon signs replaced the stars."),
    (
        "fact",
        "The Pacific Ocean is the largest and deepest of Earth's oceans, covering about a third of the "
        "planet's surface.",
    ),
    ("fact", "Water boils at 100 degrees Celsius at sea level."),
    ("fact", "The Eiffel Tower was completed in 1889 for the World's Fair in Paris."),
    ("fact", "Photosynthesis turns sunlight, water and carbon dioxide into glucose and oxygen."),
    ("fact", "Honey never spoils: edible honey has been found in ancient Egyptian tombs."),
    ("fact", "The human heart beats about 100,000 times a day."),
    ("fact", "Mount Everest is 8,849 metres tall, the highest mountain above sea level."),
    ("fact", "DNA is a double helix made of two strands of nucleotides."),
    ("advice", "Get at least seven hours of sleep, keep a regular schedule, and avoid screens before bed."),
    ("advice", "Before a job interview, research the company, prepare examples of your work, and arrive early."),
    ("advice", "To save money, track your spending for a month and cut the subscriptions you do not use."),
    ("advice", "Drink water throughout the day and carry a reusable bottle so you remember."),
    ("advice", "When learning a new language, practise a little every day and speak with native speakers."),
    ("advice", "Back up your files in two places, one of them off-site or in the cloud."),
    ("advice", "Take short breaks every hour when working at a computer to rest your eyes."),
    ("label", "Positive"),
    ("label", "Negative"),
    ("label", "Spam"),
    ("label", "Sports"),
    ("label", "Neutral"),
    ("label", "Mammal"),
    ("label", "Question"),
    ("reply", "Yes."),
    ("reply", "The answer is 42."),
    ("reply", "Paris is the capital of France."),
    ("reply", "I'm sorry, but I can't help with that request."),
    ("reply", "12 x 8 = 96"),
    (
        "email",
        "Dear Ms. Lee, thank you for your application. We would like to invite you to an interview next "
        "Tuesday at 10 am. Best regards, Tom",
    ),
    ("email", "Hi team, the meeting is moved to Friday at 3 pm. Please update your calendars. Thanks!"),
    ("email", "Dear customer, your order #4521 has shipped and should arrive within three working days."),
    ("definition", "A noun is a word that names a person, place, thing or idea."),
    ("definition", "Inflation is the rate at which the general level of prices for goods and services rises."),
    ("definition", "An algorithm is a finite sequence of steps for solving a problem."),
    (
        "definition",
        "Machine learning is a field of AI in which systems learn patterns from data instead of "
        "following explicit rules.",
    ),
    ("story", "Once upon a time, a small robot lived in a junkyard and dreamed of seeing the ocean."),
    ("story", "The detective looked at the muddy footprints and smiled: the butler had lied."),
    ("translation", "Bonjour, comment allez-vous ?"),
    ("translation", "Das Wetter ist heute schön."),
    ("summary", "The article argues that remote work raises productivity but weakens team cohesion."),
    ("summary", "In short, the study found that students who slept more earned higher grades."),
]


OWN_VALIDATION_TARGETS: list[tuple[str, str]] = [
    ("code", "def factorial(n):\n    return 1 if n <= 1 else n * factorial(n - 1)"),
    ("code", "UPDATE employees SET salary = salary * 1.05 WHERE department = 'Sales';"),
    ("code", "find . -name '*.log' -mtime +7 -delete"),
    ("code", "const evens = numbers.filter((n) => n % 2 === 0);"),
    ("code", "with open('notes.txt') as f:\n    words = f.read().split()\nprint(len(words))"),
    (
        "code",
        "async function fetchUser(id) {\n  const res = await fetch(`/api/users/${id}`);\n  return res.json();\n}",
    ),
    ("code", "from collections import Counter\ncounts = Counter(text.lower().split())\nprint(counts.most_common(3))"),
    (
        "code",
        "CREATE TABLE books (\n  id INTEGER PRIMARY KEY,\n  title TEXT NOT NULL,\n  author TEXT,\n  year INTEGER\n);",
    ),
    (
        "list",
        "1. Rinse the rice.\n2. Add two cups of water.\n3. Bring to a boil.\n4. Cover and simmer for 15 minutes.",
    ),
    ("list", "- Tent\n- Sleeping bag\n- Headlamp\n- Water filter\n- First-aid kit"),
    ("list", "Asia, Africa, North America, South America, Antarctica, Europe and Australia."),
    ("list", "Two advantages of public transport: less traffic on the roads and lower carbon emissions."),
    ("list", "Hydrogen, helium, lithium, beryllium and boron."),
    ("list", "Monday, Tuesday, Wednesday, Thursday, Friday, Saturday and Sunday."),
    ("list", "1. Write a failing test. 2. Make it pass. 3. Refactor. 4. Repeat."),
    (
        "poem",
        "The lamp burns low on the kitchen sill,\nthe kettle hums, the house is still,\nand rain that taps "
        "the window pane\nsings the garden green again.",
    ),
    ("poem", "Cherry blossoms drift,\npetals on the quiet pond,\nspring will not stay long."),
    ("poem", "The coffee is hot and the deadline is near, the bug is still hiding, but Friday is here."),
    ("poem", "Desert at midnight,\nthe stars burn cold and countless,\na lizard sleeps on."),
    ("poem", "She kept her grandmother's letters in a tin box and read them when the house was too quiet."),
    ("fact", "The Great Wall of China stretches for more than 21,000 kilometres."),
    ("fact", "Light from the Sun takes about eight minutes to reach Earth."),
    ("fact", "The Amazon is the largest tropical rainforest on Earth and spans nine countries."),
    ("fact", "Octopuses have three hearts and blue blood."),
    ("fact", "The Berlin Wall fell on 9 November 1989."),
    ("fact", "Sound travels at about 343 metres per second in air at room temperature."),
    ("fact", "An adult human skeleton has 206 bones."),
    ("fact", "Gold is the chemical element with the symbol Au and atomic number 79."),
    ("advice", "Read each exam question twice before answering, and leave the hardest problems for last."),
    ("advice", "To keep houseplants healthy, water them only when the top inch of soil is dry."),
    ("advice", "Before signing a lease, visit the flat in daylight and read every clause of the contract."),
    ("advice", "Use a password manager and turn on two-factor authentication for your email account."),
    ("advice", "When giving a presentation, rehearse it out loud and keep each slide to a single idea."),
    ("advice", "Warm up for ten minutes before a run to lower the risk of injury."),
    (
        "advice",
        "If you feel overwhelmed, write down every task, pick the single most important one and start there.",
    ),
    ("label", "Not spam"),
    ("label", "Technology"),
    ("label", "Reptile"),
    ("label", "Mixed"),
    ("label", "Statement"),
    ("label", "Politics"),
    ("label", "Urgent"),
    ("reply", "No."),
    ("reply", "Tokyo is the capital of Japan."),
    ("reply", "15% of 80 is 12."),
    ("reply", "You're welcome! Let me know if you need anything else."),
    ("reply", "The word 'apple' has five letters."),
    (
        "email",
        "Dear Mr. Patel, I am writing to request two days of leave on 14 and 15 March for a family event. "
        "Kind regards, Anna",
    ),
    (
        "email",
        "Hi Sam, could you send me the slides from yesterday's workshop? I'd like to share them with my team. "
        "Cheers, Lena",
    ),
    ("email", "Dear subscriber, your free trial ends on 30 June. Renew now to keep access to all premium features."),
    ("definition", "A metaphor is a figure of speech that describes something by calling it something else."),
    (
        "definition",
        "Compound interest is interest calculated on both the initial amount and the interest already earned.",
    ),
    ("definition", "A database is an organised collection of data that can be stored, searched and updated easily."),
    (
        "definition",
        "Climate change is the long-term shift in global temperatures and weather patterns, driven largely by "
        "human activity.",
    ),
    (
        "story",
        "The lighthouse keeper found a message in a bottle, written in his own handwriting and dated ten years "
        "from now.",
    ),
    (
        "story",
        "Mia planted a seed on her windowsill and watered it every morning. Weeks passed and nothing grew. "
        "Then, on her birthday, a single yellow flower opened.",
    ),
    ("translation", "¿Dónde está la estación de tren?"),
    ("translation", "Grazie mille per il tuo aiuto."),
    ("summary", "The report concludes that the city's new bike lanes cut car traffic downtown by a fifth."),
    ("summary", "Overall, the review finds that the phone has an excellent camera but a disappointing battery."),
]

_SPLITS: dict[str, tuple[str, list[tuple[str, str]]]] = {
    "test": ("own-", OWN_TARGETS),
    "val": ("own-val-", OWN_VALIDATION_TARGETS),
}


def own_targets(split: str = "test") -> pd.DataFrame:
    """The texts of one split as a DataFrame: `id`, `kind` and `text`.

    "test" (the default) gives OWN_TARGETS with ids "own-0" ...; "val" gives OWN_VALIDATION_TARGETS with ids
    "own-val-0" ..., for choosing rules and thresholds without touching the test texts, which are only reported on.
    """
    if split not in _SPLITS:
        raise ValueError(f"unknown split {split!r}: expected one of {', '.join(map(repr, _SPLITS))}")
    prefix, targets = _SPLITS[split]
    return pd.DataFrame([{"id": f"{prefix}{i}", "kind": kind, "text": text} for i, (kind, text) in enumerate(targets)])
