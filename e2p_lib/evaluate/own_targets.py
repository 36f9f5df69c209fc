"""Target texts that are not Alpaca outputs, written for e2p, for the users' case: inverting their own texts.

05_eval scores every method on these too (their prompts are unknown, so there is no "original prompt" row). Kinds
vary on purpose: code, lists, poems, facts, advice, classification labels, short replies, emails, definitions.
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


def own_targets() -> pd.DataFrame:
    """The texts as a DataFrame: `id` ("own-0" ...), `kind` and `text`."""
    return pd.DataFrame([{"id": f"own-{i}", "kind": kind, "text": text} for i, (kind, text) in enumerate(OWN_TARGETS)])
