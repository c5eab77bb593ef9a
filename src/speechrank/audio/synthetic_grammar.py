"""Sentence generators and keyword lists for the synthetic corpus (English, German, Spanish).

Each language has a small vocabulary and a handful of sentence templates with agreement
(number and tense in English; gender, case and verb-second order in German; gender and the
``a``/``de`` contractions in Spanish), so that a seeded generator produces many distinct,
grammatical, speakable sentences of 3-15 words. Words were chosen so that eSpeak NG reads them
with the language's own rules (no switch to an English pronunciation inside German or Spanish
text); a test checks this for every word.

The English keyword list holds the ten command words and the ten digits of Speech Commands
(Warden 2018, arXiv 1804.03209); German and Spanish get twenty keywords each (digits and
commands). Twenty classes rather than Speech Commands' 35 keep enough clips per class for a
probe in a corpus of half an hour.
"""

from __future__ import annotations

from collections.abc import Callable, Sequence
from typing import TypeVar

import numpy as np

T = TypeVar("T")

KEYWORDS: dict[str, tuple[str, ...]] = {
    "en": (
        "yes", "no", "up", "down", "left", "right", "on", "off", "stop", "go",
        "zero", "one", "two", "three", "four", "five", "six", "seven", "eight", "nine",
    ),
    "de": (
        "null", "eins", "zwei", "drei", "vier", "fünf", "sechs", "sieben", "acht", "neun",
        "ja", "nein", "hoch", "runter", "links", "rechts", "an", "aus", "halt", "los",
    ),
    "es": (
        "cero", "uno", "dos", "tres", "cuatro", "cinco", "seis", "siete", "ocho", "nueve",
        "sí", "no", "arriba", "abajo", "izquierda", "derecha", "encender", "apagar", "alto",
        "vamos",
    ),
}  # fmt: skip


def pick(rng: np.random.Generator, items: Sequence[T]) -> T:
    """One element of ``items``, uniformly."""
    return items[int(rng.integers(len(items)))]


def chance(rng: np.random.Generator, p: float) -> bool:
    """``True`` with probability ``p``."""
    return bool(rng.random() < p)


def _finish(words: list[str], mark: str = ".") -> str:
    text = " ".join(w for w in words if w)
    text = text.replace(" ,", ",")
    return text[0].upper() + text[1:] + mark


# --------------------------------------------------------------------------------------------
# English
# --------------------------------------------------------------------------------------------
_EN_NOUNS: tuple[tuple[str, str], ...] = (
    ("dog", "dogs"), ("cat", "cats"), ("bird", "birds"), ("house", "houses"), ("tree", "trees"),
    ("bed", "beds"), ("boat", "boats"), ("car", "cars"), ("river", "rivers"),
    ("city", "cities"), ("garden", "gardens"), ("teacher", "teachers"), ("child", "children"),
    ("woman", "women"), ("man", "men"), ("farmer", "farmers"), ("doctor", "doctors"),
    ("window", "windows"), ("door", "doors"), ("table", "tables"), ("letter", "letters"),
    ("book", "books"), ("apple", "apples"), ("orange", "oranges"), ("egg", "eggs"),
    ("island", "islands"), ("engine", "engines"), ("song", "songs"), ("road", "roads"),
    ("hill", "hills"), ("mountain", "mountains"), ("forest", "forests"), ("horse", "horses"),
    ("kitchen", "kitchens"), ("market", "markets"), ("train", "trains"), ("ship", "ships"),
    ("lamp", "lamps"), ("chair", "chairs"), ("bottle", "bottles"), ("stone", "stones"),
    ("flower", "flowers"), ("cloud", "clouds"), ("bridge", "bridges"), ("student", "students"),
    ("friend", "friends"), ("neighbour", "neighbours"), ("baker", "bakers"),
    ("sailor", "sailors"), ("pilot", "pilots"), ("machine", "machines"),
    ("picture", "pictures"), ("basket", "baskets"), ("piano", "pianos"),
    ("village", "villages"), ("uncle", "uncles"), ("owl", "owls"), ("umbrella", "umbrellas"),
    ("blanket", "blankets"), ("rabbit", "rabbits"), ("candle", "candles"), ("wagon", "wagons"),
)  # fmt: skip
_EN_ADJECTIVES = (
    "big", "small", "old", "young", "happy", "red", "green", "blue", "yellow", "quiet",
    "loud", "bright", "heavy", "warm", "cold", "tall", "strange", "famous",
    "tired", "clever", "little", "gentle", "empty", "busy", "lazy", "brave", "wooden", "angry",
    "early", "honest", "orange", "silver", "purple", "careful", "friendly",
)  # fmt: skip
# (base, third person singular, past)
_EN_TRANSITIVE = (
    ("see", "sees", "saw"), ("find", "finds", "found"), ("like", "likes", "liked"),
    ("carry", "carries", "carried"), ("watch", "watches", "watched"),
    ("follow", "follows", "followed"), ("open", "opens", "opened"),
    ("paint", "paints", "painted"), ("visit", "visits", "visited"),
    ("build", "builds", "built"), ("move", "moves", "moved"), ("clean", "cleans", "cleaned"),
    ("catch", "catches", "caught"), ("bring", "brings", "brought"), ("want", "wants", "wanted"),
    ("need", "needs", "needed"), ("help", "helps", "helped"), ("love", "loves", "loved"),
    ("push", "pushes", "pushed"), ("pull", "pulls", "pulled"), ("draw", "draws", "drew"),
    ("sell", "sells", "sold"), ("buy", "buys", "bought"), ("hold", "holds", "held"),
    ("remember", "remembers", "remembered"), ("forget", "forgets", "forgot"),
)  # fmt: skip
_EN_INTRANSITIVE = (
    ("sleep", "sleeps", "slept"), ("run", "runs", "ran"), ("wait", "waits", "waited"),
    ("laugh", "laughs", "laughed"), ("sing", "sings", "sang"), ("smile", "smiles", "smiled"),
    ("jump", "jumps", "jumped"), ("stop", "stops", "stopped"), ("go", "goes", "went"),
    ("fall", "falls", "fell"), ("work", "works", "worked"), ("listen", "listens", "listened"),
    ("learn", "learns", "learned"), ("walk", "walks", "walked"), ("swim", "swims", "swam"),
    ("dance", "dances", "danced"), ("rest", "rests", "rested"), ("play", "plays", "played"),
)  # fmt: skip
_EN_PREPOSITIONS = (
    "near", "behind", "under", "over", "beside", "inside", "across", "around", "with",
    "into", "past", "towards", "along", "below", "above", "between the houses and",
)  # fmt: skip
_EN_ADVERBS_ANY = (
    "quickly", "slowly", "again", "quietly", "carefully", "happily", "together", "at night",
    "in the morning", "after lunch", "once more", "all day",
)  # fmt: skip
_EN_ADVERBS_PRESENT = ("today", "every day", "now", "often", "every morning")
_EN_ADVERBS_PAST = ("yesterday", "last week", "long ago", "last night", "this morning")
_EN_NUMBERS = ("two", "three", "four", "five", "six", "seven", "eight", "nine", "ten", "twelve")
_EN_DIRECTIONS = ("left", "right", "up", "down", "forward", "back", "home", "on", "off")


def _en_article(next_word: str) -> str:
    return "an" if next_word[0] in "aeiou" else "a"


def _en_np(rng: np.random.Generator, plural: bool, adj_p: float = 0.45) -> list[str]:
    singular, plural_form = pick(rng, _EN_NOUNS)
    noun = plural_form if plural else singular
    words = [pick(rng, _EN_ADJECTIVES), noun] if chance(rng, adj_p) else [noun]
    if plural:
        det = pick(rng, ("the", "the", "some", "many", "these", "those", "my", "our", *_EN_NUMBERS))
    else:
        det = pick(rng, ("the", "the", "a", "a", "this", "that", "my", "your", "every", "one"))
        if det == "a":
            det = _en_article(words[0])
    return [det, *words]


def _en_pp(rng: np.random.Generator) -> list[str]:
    return [pick(rng, _EN_PREPOSITIONS), *_en_np(rng, chance(rng, 0.3), 0.35)]


def _en_verb(verb: tuple[str, str, str], plural: bool, past: bool) -> str:
    base, third, past_form = verb
    if past:
        return past_form
    return base if plural else third


def _en_declarative(rng: np.random.Generator) -> list[str]:
    plural = chance(rng, 0.4)
    past = chance(rng, 0.4)
    words = _en_np(rng, plural)
    if chance(rng, 0.6):
        words += [_en_verb(pick(rng, _EN_TRANSITIVE), plural, past), *_en_np(rng, chance(rng, 0.4))]
    else:
        words.append(_en_verb(pick(rng, _EN_INTRANSITIVE), plural, past))
    if chance(rng, 0.5):
        words += _en_pp(rng)
    if chance(rng, 0.4):
        pool = _EN_ADVERBS_ANY + (_EN_ADVERBS_PAST if past else _EN_ADVERBS_PRESENT)
        words.append(pick(rng, pool))
    return words


def _english(rng: np.random.Generator) -> str:
    form = pick(rng, ("decl", "decl", "decl", "compound", "copula", "question", "imperative",
                      "there", "command"))  # fmt: skip
    if form == "decl":
        return _finish(_en_declarative(rng))
    if form == "compound":
        first = _en_declarative(rng)
        return _finish([*first, ",", pick(rng, ("and", "but", "so")), *_en_declarative(rng)])
    if form == "copula":
        plural = chance(rng, 0.4)
        past = chance(rng, 0.4)
        verb = ("were" if plural else "was") if past else ("are" if plural else "is")
        adverb = pick(rng, ("", "very", "quite", "not", "always"))
        return _finish([*_en_np(rng, plural, 0.2), verb, adverb, pick(rng, _EN_ADJECTIVES)])
    if form == "question":
        kind = pick(rng, ("where", "did", "can", "why"))
        if kind == "where":
            plural = chance(rng, 0.4)
            return _finish(["where", "are" if plural else "is", *_en_np(rng, plural)], "?")
        verb = pick(rng, _EN_TRANSITIVE)[0]
        if kind == "why":
            plural = chance(rng, 0.4)
            lead = ["why", "do" if plural else "does", *_en_np(rng, plural)]
        else:
            lead = [kind, *_en_np(rng, chance(rng, 0.4))]
        return _finish([*lead, verb, *_en_np(rng, chance(rng, 0.4))], "?")
    if form == "imperative":
        words = [pick(rng, ("please", "", "")), pick(rng, _EN_TRANSITIVE)[0]]
        words += _en_np(rng, chance(rng, 0.4))
        if chance(rng, 0.6):
            words += _en_pp(rng)
        return _finish(words)
    if form == "there":
        plural = chance(rng, 0.6)
        return _finish(["there", "are" if plural else "is", *_en_np(rng, plural), *_en_pp(rng)])
    # command: the keyword vocabulary in running speech
    direction = pick(rng, _EN_DIRECTIONS)
    words = [pick(rng, ("go", "turn", "move", "look", "step")), direction]
    if chance(rng, 0.5):
        words += ["at", "the", pick(rng, _EN_NOUNS)[0]]
    words += [pick(rng, ("now", "and stop", "then wait", "please", "", "twice"))]
    if chance(rng, 0.4):
        words = [pick(rng, ("yes", "no", "okay", "wow")), ",", *words]
    return _finish(words)


# --------------------------------------------------------------------------------------------
# German
# --------------------------------------------------------------------------------------------
# (noun, gender) with gender m/f/n; no weak masculine nouns, no plural forms needed.
_DE_NOUNS: tuple[tuple[str, str], ...] = (
    ("Hund", "m"), ("Katze", "f"), ("Vogel", "m"), ("Haus", "n"), ("Baum", "m"), ("Bett", "n"),
    ("Auto", "n"), ("Fluss", "m"), ("Stadt", "f"), ("Garten", "m"), ("Lehrer", "m"),
    ("Kind", "n"), ("Frau", "f"), ("Mann", "m"), ("Bauer", "m"), ("Fenster", "n"), ("Tür", "f"),
    ("Tisch", "m"), ("Brief", "m"), ("Buch", "n"), ("Apfel", "m"), ("Blume", "f"),
    ("Wolke", "f"), ("Brücke", "f"), ("Schiff", "n"), ("Zug", "m"), ("Lampe", "f"),
    ("Stuhl", "m"), ("Flasche", "f"), ("Stein", "m"), ("Pferd", "n"), ("Fisch", "m"),
    ("Küche", "f"), ("Markt", "m"), ("Dorf", "n"), ("Berg", "m"), ("Wald", "m"), ("Insel", "f"),
    ("Maschine", "f"), ("Bild", "n"), ("Korb", "m"), ("Klavier", "n"), ("Freund", "m"),
    ("Nachbarin", "f"), ("Schule", "f"), ("Kuchen", "m"), ("Wagen", "m"), ("Kerze", "f"),
    ("Decke", "f"), ("Hase", "m"), ("Eule", "f"), ("Lied", "n"), ("Straße", "f"),
)  # fmt: skip
_DE_ADJECTIVES = (
    "groß", "klein", "alt", "jung", "rot", "grün", "blau", "gelb", "leise", "laut", "hell",
    "schwer", "leicht", "warm", "kalt", "müde", "klug", "fremd", "schön", "neu", "ruhig",
    "schnell", "langsam", "freundlich", "lustig", "stark", "bunt", "hungrig",
)  # fmt: skip
_DE_TRANSITIVE = (
    "sieht", "findet", "mag", "trägt", "beobachtet", "öffnet", "malt", "besucht", "baut",
    "sucht", "kauft", "braucht", "holt", "liest", "schreibt", "zeichnet", "hört", "verkauft",
    "putzt", "vergisst", "bringt", "hält",
)  # fmt: skip
_DE_INTRANSITIVE = (
    "schläft", "läuft", "wartet", "lacht", "singt", "arbeitet", "spielt", "wohnt", "steht",
    "sitzt", "tanzt", "schwimmt", "ruht", "lernt",
)  # fmt: skip
_DE_DATIVE_PREPOSITIONS = ("mit", "bei", "neben", "hinter", "unter", "vor", "von")
_DE_ADVERBS = (
    "heute", "oft", "gern", "schnell", "langsam", "jetzt", "wieder", "immer", "leise",
    "am Morgen", "in der Nacht", "jeden Tag", "zusammen", "sofort",
)  # fmt: skip
_DE_DEFINITE = {
    "nom": {"m": "der", "f": "die", "n": "das"},
    "acc": {"m": "den", "f": "die", "n": "das"},
    "dat": {"m": "dem", "f": "der", "n": "dem"},
}
_DE_INDEFINITE = {
    "nom": {"m": "ein", "f": "eine", "n": "ein"},
    "acc": {"m": "einen", "f": "eine", "n": "ein"},
    "dat": {"m": "einem", "f": "einer", "n": "einem"},
}


def _de_np(rng: np.random.Generator, case: str, adj_p: float = 0.4) -> list[str]:
    noun, gender = pick(rng, _DE_NOUNS)
    if chance(rng, adj_p):
        # Definite article + weak adjective ending: -e in the nominative (all genders) and in
        # the feminine/neuter accusative, -en everywhere else.
        weak_e = case == "nom" or (case == "acc" and gender != "m")
        adjective = pick(rng, _DE_ADJECTIVES) + ("e" if weak_e else "en")
        if adjective.endswith("ee") or adjective.endswith("een"):
            adjective = adjective[:-2] + adjective[-1:]  # leise -> leise/leisen
        return [_DE_DEFINITE[case][gender], adjective, noun]
    table = _DE_DEFINITE if chance(rng, 0.6) else _DE_INDEFINITE
    return [table[case][gender], noun]


def _german(rng: np.random.Generator) -> str:
    form = pick(rng, ("svo", "svo", "inverted", "intransitive", "copula", "question", "imperative"))
    if form == "svo":
        words = [*_de_np(rng, "nom"), pick(rng, _DE_TRANSITIVE), *_de_np(rng, "acc")]
        if chance(rng, 0.4):
            words.append(pick(rng, _DE_ADVERBS))
        return _finish(words)
    if form == "inverted":
        adverb = pick(rng, ("heute", "jetzt", "oft", "morgen", "dort", "hier", "wieder"))
        words = [adverb, pick(rng, _DE_TRANSITIVE), *_de_np(rng, "nom"), *_de_np(rng, "acc")]
        return _finish(words)
    if form == "intransitive":
        words = [*_de_np(rng, "nom"), pick(rng, _DE_INTRANSITIVE)]
        if chance(rng, 0.4):
            words.append(pick(rng, _DE_ADVERBS))
        words += [pick(rng, _DE_DATIVE_PREPOSITIONS), *_de_np(rng, "dat")]
        return _finish(words)
    if form == "copula":
        adverb = pick(rng, ("", "sehr", "nicht", "immer", "ganz"))
        return _finish([*_de_np(rng, "nom", 0.0), "ist", adverb, pick(rng, _DE_ADJECTIVES)])
    if form == "question":
        if chance(rng, 0.5):
            return _finish(["wo", "ist", *_de_np(rng, "nom")], "?")
        return _finish([pick(rng, ("siehst", "suchst", "magst")), "du", *_de_np(rng, "acc")], "?")
    words = [pick(rng, ("bitte", "", "")), pick(rng, ("hol", "such", "öffne", "bring", "mal"))]
    words += [*_de_np(rng, "acc"), pick(rng, ("", "jetzt", "schnell", "sofort"))]
    return _finish(words)


# --------------------------------------------------------------------------------------------
# Spanish
# --------------------------------------------------------------------------------------------
# (noun, gender, animate): animate direct objects take the personal "a".
_ES_NOUNS: tuple[tuple[str, str, bool], ...] = (
    ("perro", "m", True), ("gata", "f", True), ("pájaro", "m", True), ("casa", "f", False),
    ("árbol", "m", False), ("cama", "f", False), ("coche", "m", False), ("río", "m", False),
    ("ciudad", "f", False), ("jardín", "m", False), ("maestro", "m", True),
    ("niña", "f", True), ("mujer", "f", True), ("hombre", "m", True), ("médico", "m", True),
    ("ventana", "f", False), ("puerta", "f", False), ("mesa", "f", False),
    ("carta", "f", False), ("libro", "m", False), ("manzana", "f", False), ("flor", "f", False),
    ("nube", "f", False), ("puente", "m", False), ("barco", "m", False), ("tren", "m", False),
    ("lámpara", "f", False), ("silla", "f", False), ("botella", "f", False),
    ("piedra", "f", False), ("caballo", "m", True), ("pez", "m", True), ("cocina", "f", False),
    ("mercado", "m", False), ("pueblo", "m", False), ("montaña", "f", False),
    ("bosque", "m", False), ("isla", "f", False), ("máquina", "f", False),
    ("cuadro", "m", False), ("cesta", "f", False), ("amigo", "m", True), ("vecina", "f", True),
    ("escuela", "f", False), ("pastel", "m", False), ("vela", "f", False),
    ("conejo", "m", True), ("canción", "f", False), ("camino", "m", False),
)  # fmt: skip
# (masculine, feminine)
_ES_ADJECTIVES = (
    ("grande", "grande"), ("pequeño", "pequeña"), ("viejo", "vieja"), ("joven", "joven"),
    ("rojo", "roja"), ("verde", "verde"), ("azul", "azul"), ("amarillo", "amarilla"),
    ("tranquilo", "tranquila"), ("bonito", "bonita"), ("nuevo", "nueva"), ("alto", "alta"),
    ("cansado", "cansada"), ("rápido", "rápida"),
    ("lento", "lenta"), ("feliz", "feliz"), ("simpático", "simpática"), ("oscuro", "oscura"),
)  # fmt: skip
_ES_TRANSITIVE = (
    "ve", "busca", "encuentra", "lleva", "mira", "pinta", "visita", "compra", "necesita",
    "dibuja", "escucha", "quiere", "limpia", "sigue", "olvida", "recuerda", "vende", "toca",
)  # fmt: skip
_ES_INTRANSITIVE = (
    "duerme", "corre", "espera", "canta", "trabaja", "juega", "vive", "salta", "descansa",
    "baila", "nada", "camina", "aprende",
)  # fmt: skip
_ES_PREPOSITIONS = ("con", "cerca de", "detrás de", "debajo de", "delante de", "junto a", "sin")
_ES_ADVERBS = (
    "hoy", "ahora", "otra vez", "siempre", "despacio", "a menudo", "también", "por la mañana",
    "por la noche", "todos los días", "juntos", "de nuevo",
)  # fmt: skip


def _es_np(rng: np.random.Generator, adj_p: float = 0.4) -> tuple[list[str], bool]:
    noun, gender, animate = pick(rng, _ES_NOUNS)
    article = pick(rng, ("el", "un") if gender == "m" else ("la", "una"))
    words = [article, noun]
    if chance(rng, adj_p):
        words.append(pick(rng, _ES_ADJECTIVES)[0 if gender == "m" else 1])
    return words, animate


def _es_contract(words: list[str]) -> list[str]:
    """``a el`` -> ``al``, ``de el`` -> ``del`` (also inside multi-word prepositions)."""
    out: list[str] = []
    for word in " ".join(words).split(" "):
        if word == "el" and out and out[-1] in ("a", "de"):
            out[-1] = "al" if out[-1] == "a" else "del"
            continue
        out.append(word)
    return out


def _es_object(rng: np.random.Generator) -> list[str]:
    words, animate = _es_np(rng)
    return ["a", *words] if animate else words


def _spanish(rng: np.random.Generator) -> str:
    form = pick(rng, ("svo", "svo", "intransitive", "copula", "question", "inverted"))
    if form == "svo":
        words = [*_es_np(rng)[0], pick(rng, _ES_TRANSITIVE), *_es_object(rng)]
        if chance(rng, 0.4):
            words.append(pick(rng, _ES_ADVERBS))
        return _finish(_es_contract(words))
    if form == "intransitive":
        words = [*_es_np(rng)[0], pick(rng, _ES_INTRANSITIVE)]
        if chance(rng, 0.3):
            words.append(pick(rng, _ES_ADVERBS))
        words += [pick(rng, _ES_PREPOSITIONS), *_es_np(rng, 0.3)[0]]
        return _finish(_es_contract(words))
    if form == "copula":
        noun, gender, _ = pick(rng, _ES_NOUNS)
        article = "el" if gender == "m" else "la"
        adjective = pick(rng, _ES_ADJECTIVES)[0 if gender == "m" else 1]
        adverb = pick(rng, ("", "muy", "no", "siempre", "bastante"))
        return _finish([article, noun, "es", adverb, adjective])
    if form == "question":
        return "¿" + _finish(["dónde", "está", *_es_np(rng)[0]], "?")
    adverb = pick(rng, ("hoy", "ahora", "mañana", "allí", "aquí"))
    words = [adverb, ",", *_es_np(rng)[0], pick(rng, _ES_TRANSITIVE), *_es_object(rng)]
    return _finish(_es_contract(words))


GENERATORS: dict[str, Callable[[np.random.Generator], str]] = {
    "en": _english,
    "de": _german,
    "es": _spanish,
}


def sentence(language: str, rng: np.random.Generator) -> str:
    """One random sentence in ``language`` (``en``, ``de`` or ``es``), drawn from ``rng``."""
    return GENERATORS[language](rng)


def vocabulary(language: str) -> list[str]:
    """Every word the generator and keyword list of ``language`` can emit (for tests)."""
    words: set[str] = set(KEYWORDS[language])
    tables: dict[str, tuple[object, ...]] = {
        "en": (_EN_NOUNS, _EN_ADJECTIVES, _EN_TRANSITIVE, _EN_INTRANSITIVE, _EN_PREPOSITIONS,
               _EN_ADVERBS_ANY, _EN_ADVERBS_PAST, _EN_ADVERBS_PRESENT, _EN_NUMBERS,
               _EN_DIRECTIONS),
        "de": (_DE_NOUNS, _DE_ADJECTIVES, _DE_TRANSITIVE, _DE_INTRANSITIVE,
               _DE_DATIVE_PREPOSITIONS, _DE_ADVERBS),
        "es": (_ES_NOUNS, _ES_ADJECTIVES, _ES_TRANSITIVE, _ES_INTRANSITIVE, _ES_PREPOSITIONS,
               _ES_ADVERBS),
    }  # fmt: skip

    def add(item: object) -> None:
        if isinstance(item, str):
            words.update(item.split())
        elif isinstance(item, tuple):
            for part in item:
                add(part)

    for table in tables[language]:
        add(table)
    return sorted(w for w in words if w.isalpha())
