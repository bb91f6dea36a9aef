"""Word banks, sentence templates and the small functions that fill them into prose, per language."""

from __future__ import annotations

import random
import re

# ---------------------------------------------------------------------------------------------
# English: topics with their own nouns, verbs ("base/past/-ing") and adjectives.
# ---------------------------------------------------------------------------------------------

EN_TOPICS = {
    "gardening": {
        "label": "gardening",
        "nouns": ["tomato", "seedling", "compost heap", "raised bed", "watering can", "rose bush",
                  "hedge", "greenhouse", "spade", "vegetable patch", "flower border", "apple tree",
                  "potato", "wheelbarrow", "garden shed", "lettuce", "trellis", "herb garden",
                  "cold frame", "bean pole"],
        "verbs": ["plant/planted/planting", "prune/pruned/pruning", "water/watered/watering",
                  "weed/weeded/weeding", "tend/tended/tending", "repot/repotted/repotting",
                  "harvest/harvested/harvesting", "protect/protected/protecting",
                  "mulch/mulched/mulching", "grow/grew/growing"],
        "adjs": ["leafy", "sunny", "overgrown", "fertile", "tidy", "shady", "muddy", "fragrant",
                 "hardy", "young"],
    },
    "cycling": {
        "label": "cycling",
        "nouns": ["bicycle", "saddle", "chain", "helmet", "mountain trail", "road bike", "pannier",
                  "puncture", "hill climb", "gear lever", "brake pad", "tyre", "bike lane",
                  "cycling club", "water bottle", "handlebar", "tandem", "bell", "pump",
                  "touring bike"],
        "verbs": ["ride/rode/riding", "repair/repaired/repairing", "clean/cleaned/cleaning",
                  "adjust/adjusted/adjusting", "tighten/tightened/tightening",
                  "replace/replaced/replacing", "inspect/inspected/inspecting", "oil/oiled/oiling",
                  "borrow/borrowed/borrowing", "carry/carried/carrying"],
        "adjs": ["steep", "fast", "rusty", "lightweight", "winding", "smooth", "bumpy", "breezy",
                 "tired", "dusty"],
    },
    "cooking": {
        "label": "cooking",
        "nouns": ["soup", "loaf", "pie", "casserole", "frying pan", "recipe", "onion", "sauce",
                  "stew", "dumpling", "pancake", "oven", "spice rack", "cutting board", "lemon cake",
                  "roast chicken", "salad", "kitchen knife", "omelette", "biscuit"],
        "verbs": ["cook/cooked/cooking", "bake/baked/baking", "stir/stirred/stirring",
                  "chop/chopped/chopping", "taste/tasted/tasting", "season/seasoned/seasoning",
                  "roast/roasted/roasting", "simmer/simmered/simmering",
                  "prepare/prepared/preparing", "serve/served/serving"],
        "adjs": ["spicy", "crisp", "golden", "tender", "hearty", "sweet", "salty", "fresh", "warm",
                 "creamy"],
    },
    "astronomy": {
        "label": "astronomy",
        "nouns": ["telescope", "planet", "comet", "star chart", "eclipse", "meteor shower", "moon",
                  "constellation", "observatory", "galaxy", "nebula", "lens", "tripod", "night sky",
                  "satellite", "crater", "eyepiece", "orbit", "asteroid", "star party"],
        "verbs": ["observe/observed/observing", "photograph/photographed/photographing",
                  "track/tracked/tracking", "spot/spotted/spotting", "measure/measured/measuring",
                  "study/studied/studying", "map/mapped/mapping", "find/found/finding",
                  "watch/watched/watching", "record/recorded/recording"],
        "adjs": ["faint", "bright", "distant", "clear", "dark", "cloudless", "enormous", "ancient",
                 "cold", "silent"],
    },
    "history": {
        "label": "local history",
        "nouns": ["church tower", "market square", "parish record", "old mill", "stone bridge",
                  "town archive", "photograph", "manor house", "railway line", "canal",
                  "village school", "war memorial", "letter", "map", "diary", "gravestone",
                  "census return", "coaching inn", "chapel", "tannery"],
        "verbs": ["discover/discovered/discovering", "restore/restored/restoring",
                  "visit/visited/visiting", "document/documented/documenting",
                  "research/researched/researching", "preserve/preserved/preserving",
                  "rebuild/rebuilt/rebuilding", "explore/explored/exploring",
                  "describe/described/describing", "catalogue/catalogued/cataloguing"],
        "adjs": ["forgotten", "crumbling", "historic", "medieval", "dusty", "grand", "humble",
                 "local", "faded", "remarkable"],
    },
    "software": {
        "label": "programming",
        "nouns": ["database", "bug", "test suite", "laptop", "script", "server", "keyboard",
                  "compiler", "pull request", "code review", "release", "function", "backup",
                  "spreadsheet", "terminal", "library", "error message", "deadline", "feature",
                  "log file"],
        "verbs": ["debug/debugged/debugging", "deploy/deployed/deploying", "write/wrote/writing",
                  "refactor/refactored/refactoring", "test/tested/testing",
                  "install/installed/installing", "configure/configured/configuring",
                  "review/reviewed/reviewing", "update/updated/updating",
                  "rewrite/rewrote/rewriting"],
        "adjs": ["slow", "messy", "stable", "broken", "elegant", "fragile", "modern", "legacy",
                 "readable", "efficient"],
    },
    "weather": {
        "label": "weather watching",
        "nouns": ["storm", "thunderstorm", "rain gauge", "forecast", "frost", "heatwave", "cloud",
                  "gale", "rainbow", "weather station", "barometer", "drought", "hailstorm",
                  "breeze", "puddle", "umbrella", "snowfall", "fog bank", "sunrise", "thermometer"],
        "verbs": ["measure/measured/measuring", "forecast/forecast/forecasting",
                  "watch/watched/watching", "predict/predicted/predicting",
                  "record/recorded/recording", "expect/expected/expecting",
                  "notice/noticed/noticing", "track/tracked/tracking",
                  "describe/described/describing", "chase/chased/chasing"],
        "adjs": ["humid", "chilly", "windy", "stormy", "mild", "grey", "foggy", "frosty", "warm",
                 "unpredictable"],
    },
    "music": {
        "label": "music",
        "nouns": ["guitar", "piano", "choir", "concert", "melody", "drum kit", "violin",
                  "rehearsal", "song", "album", "orchestra", "record player", "chord", "brass band",
                  "microphone", "harmony", "lyric", "stage", "festival", "metronome"],
        "verbs": ["play/played/playing", "practise/practised/practising", "tune/tuned/tuning",
                  "compose/composed/composing", "record/recorded/recording",
                  "rehearse/rehearsed/rehearsing", "perform/performed/performing",
                  "learn/learned/learning", "teach/taught/teaching", "arrange/arranged/arranging"],
        "adjs": ["loud", "soft", "catchy", "joyful", "melancholy", "lively", "rhythmic", "haunting",
                 "cheerful", "elegant"],
    },
    "travel": {
        "label": "travel",
        "nouns": ["suitcase", "ferry", "mountain village", "guesthouse", "train journey",
                  "passport", "market", "harbour town", "museum", "campsite", "hiking trail",
                  "bus ticket", "guidebook", "island", "beach", "border crossing", "castle",
                  "postcard", "backpack", "night train"],
        "verbs": ["visit/visited/visiting", "explore/explored/exploring", "pack/packed/packing",
                  "book/booked/booking", "cross/crossed/crossing",
                  "photograph/photographed/photographing", "discover/discovered/discovering",
                  "plan/planned/planning", "reach/reached/reaching", "leave/left/leaving"],
        "adjs": ["remote", "crowded", "peaceful", "charming", "sunny", "busy", "scenic",
                 "affordable", "unforgettable", "quiet"],
    },
    "birds": {
        "label": "birdwatching",
        "nouns": ["robin", "heron", "owl", "bird feeder", "nest box", "notebook", "kingfisher",
                  "woodpecker", "swallow", "hide", "flock", "marsh", "feather", "song thrush",
                  "wetland", "field guide", "sparrow", "buzzard", "estuary", "hedgerow"],
        "verbs": ["spot/spotted/spotting", "watch/watched/watching", "count/counted/counting",
                  "feed/fed/feeding", "identify/identified/identifying", "hear/heard/hearing",
                  "follow/followed/following", "sketch/sketched/sketching",
                  "photograph/photographed/photographing", "record/recorded/recording"],
        "adjs": ["shy", "colourful", "rare", "noisy", "tiny", "elusive", "graceful", "common",
                 "hungry", "restless"],
    },
    "photography": {
        "label": "photography",
        "nouns": ["camera", "lens", "tripod", "portrait", "landscape", "darkroom", "shutter",
                  "film roll", "print", "exposure", "flash", "studio", "photo album", "sunset",
                  "filter", "viewfinder", "snapshot", "memory card", "light meter", "frame"],
        "verbs": ["take/took/taking", "frame/framed/framing", "edit/edited/editing",
                  "print/printed/printing", "develop/developed/developing",
                  "capture/captured/capturing", "light/lit/lighting", "crop/cropped/cropping",
                  "focus/focused/focusing", "share/shared/sharing"],
        "adjs": ["sharp", "blurry", "vivid", "grainy", "dramatic", "moody", "candid", "bright",
                 "balanced", "striking"],
    },
}

TOPIC_KEYS = sorted(EN_TOPICS)

EN_ADJS = ["simple", "useful", "quiet", "careful", "small", "steady", "practical", "cheap",
           "difficult", "pleasant", "rewarding", "clever", "modest", "reliable", "familiar",
           "unusual", "gentle", "sturdy", "honest", "awkward", "generous", "old-fashioned"]

EN_PEOPLE = ["my neighbour Ruth", "an old friend from school", "a retired teacher",
             "my grandmother", "the woman who runs the corner shop", "a reader from the coast",
             "my brother", "our editor", "a local farmer", "a young couple down the road",
             "the man at the hardware store", "a colleague of mine", "my uncle Walter",
             "the librarian in our village", "a student I met on the train", "my sister Helen",
             "an elderly gentleman called Frank", "the postman"]

EN_TIMES = ["last spring", "one Sunday morning", "in the middle of winter", "on a wet Tuesday",
            "earlier this year", "a few weeks ago", "during the long summer evenings",
            "at the end of autumn", "over the holidays", "one cold morning in March",
            "after a busy week", "before the sun came up", "late last night", "one weekend in June",
            "three summers ago", "on the first warm day of the year"]

EN_PLACES = ["the old market", "the edge of town", "the river path", "our back yard",
             "the village hall", "the hills above the lake", "a quiet side street", "the harbour",
             "the community centre", "the train station", "the north coast", "my kitchen table",
             "the public library", "the allotments", "the park near our house",
             "the bottom of the valley"]

EN_ADVERBS = ["slowly", "carefully", "quietly", "patiently", "gently", "properly", "regularly",
              "thoroughly", "calmly", "steadily"]

EN_NUMBERS = ["two", "three", "four", "five", "six", "seven", "eight", "nine", "ten", "eleven",
              "twelve"]

# Sentence templates. Slots: {n} {n2} noun, {ns} {ns2} plural noun, {a} {a2} adjective, {v}
# {ved} {ving} verb forms, {per} person, {time}, {place}, {adv}, {num}, {topic}.
EN_TEMPLATES = [
    "Most people who {v} a {n} for the first time are surprised by how {a} the whole thing feels.",
    "{time}, we spent a long afternoon {ving} the {n} near {place}.",
    "The {n} is not the most {a} part of the job, but it is the part that people remember.",
    "If you have never tried to {v} a {n}, start with something small and {a}.",
    "There is a good reason why {per} always keeps a spare {n} close at hand.",
    "I learned more about {topic} from {per} than from any book I have read.",
    "It took us {num} attempts before the {n} finally looked the way we wanted.",
    "Nobody warned me that a {a} {n} could take up so much of a weekend.",
    "When the {n} started to look {a}, we knew it was time to change our plans.",
    "{per} says that the secret is to {v} the {n} {adv} and never rush it.",
    "That was the year I stopped worrying about the {n} and started enjoying {topic} again.",
    "You do not need expensive {ns} to get good results; you need time and a little patience.",
    "The first thing you notice at {place} is how many {ns} there are.",
    "We {ved} the {n} twice before anyone noticed the problem with the {n2}.",
    "After {num} years of {topic}, I still find the {n} the hardest thing to get right.",
    "Some readers wrote in to ask whether a {a} {n} is worth the extra effort.",
    "My honest answer is that it depends on the {n2} and on how much time you have.",
    "In our experience, the {a} {ns} are usually the ones that last the longest.",
    "There is something {a} about {ving} a {n} while the rest of the house is asleep.",
    "The old advice was to {v} every {n} by hand, and for once the old advice was right.",
    "{per} showed me a trick with the {n} that I have used ever since.",
    "Of course, not every {n} behaves the same way, and that is half the fun.",
    "We made a list of the {ns} we wanted to try, and it grew longer every week.",
    "It is easy to forget how {a} a simple {n} can be until you lose it.",
    "By the end of the day the {n} looked {a}, and so did we.",
    "The best moments in {topic} are often the quiet ones that nobody photographs.",
    "If the {n} looks {a}, leave it alone for a day and check it again in the morning.",
    "A {a} {n} will forgive a lot of mistakes, but not all of them.",
    "{time}, {per} asked me why I still bother to {v} my own {ns}.",
    "The answer, I think, has more to do with habit than with skill.",
    "Our small group meets at {place} to compare notes and share spare {ns}.",
    "Every member brings something different, from a {a} {n} to a flask of hot tea.",
    "What surprised me most was how much the {n2} changed once we moved the {n}.",
    "Looking back, I would have spent less money on {ns} and more time learning to {v} them.",
    "I keep a notebook in which I write down every {n} I {v} and what happened next.",
    "Some pages are full of careful notes, while others simply say that it rained.",
    "You will hear many opinions about the right way to {v} a {n}.",
    "Try a few of them, keep the ones that work for you, and ignore the rest.",
    "The {n} at {place} has become something of a local landmark.",
    "Children in particular love to watch us {v} the {ns}, and they ask wonderful questions.",
    "One of them wanted to know whether a {n} could ever be too {a}.",
    "I told her that I had been asking myself the same question for years.",
    "For a beginner, a {a} {n} and a {a2} {n2} are more than enough.",
    "The rest can wait until you know what you actually enjoy about {topic}.",
    "It was only recently that I understood why people care so much about the {n}.",
    "Since then I have {ved} more {ns} than I can count.",
    "Not all of them were successful, and a few were complete disasters.",
    "Still, each mistake taught me something about {ving} that no book could have explained.",
    "The weather at {place} can turn quickly, so plan your day around it.",
    "A good {n} is like a good friend: {a}, honest and there when you need it.",
    "I would rather {v} one {n} well than ten of them badly.",
    "Prices for a decent {n} have gone up, but you can still find bargains if you look.",
    "Second-hand shops and local notice boards are often the best places to start.",
    "{per} found a {a} {n} at a village sale for almost nothing.",
    "It needed some work, but after a weekend of {ving} it was as good as new.",
    "The key is to {v} the {n} before it becomes a problem rather than after.",
    "That sounds obvious, yet almost everyone I know has learned it the hard way.",
    "On a good day, {ving} the {ns} takes about {num} hours from start to finish.",
    "On a bad day it takes twice as long and the tea goes cold.",
    "If you are lucky enough to live near {place}, you will find plenty of people to learn from.",
    "Ask them about their favourite {n} and they will happily talk for an hour.",
    "I have always believed that {topic} is best learned by doing rather than reading.",
    "This article is my attempt to collect what I have learned so far.",
    "Some of it may be useful to you, and some of it may simply make you smile.",
    "Either way, thank you for reading, and please share your own stories below.",
    "The {n} in the corner had been {ved} so many times that nobody remembered its original shape.",
    "We decided to {v} it {adv} this time and write down every step.",
    "The result was not perfect, but it was much more {a} than before.",
    "There are {num} things I check every time I {v} a {n}.",
    "The first is the {n2}, which tells you more than you might expect.",
    "The second is the light, because everything looks different in the late afternoon.",
    "The third is my own mood, which matters more than any piece of equipment.",
    "People sometimes ask whether {topic} is an expensive hobby.",
    "It can be, but it does not have to be, and the cheapest years were often the happiest.",
    "Last month a reader sent us a photo of a {a} {n} from {place}.",
    "It was one of the nicest things we have received all year.",
    "The {ns} we saw there were {a} and surprisingly well cared for.",
    "I suspect that somebody in the neighbourhood spends every free evening on them.",
    "A short walk from {place} brought us to a row of {a} {ns}.",
    "We stopped to talk with the owner, who turned out to be a fountain of knowledge.",
    "She explained how she likes to {v} each {n} and why she never takes shortcuts.",
    "Before you begin, make sure the {n} is clean, dry and within easy reach.",
    "Then take a deep breath, because the next part needs both hands and a clear head.",
    "Many of the problems we see come from trying to do too much at once.",
    "Pick one {n}, give it your full attention, and move on only when it is finished.",
    "It is worth saying that the {a} option is not always the right one.",
    "Sometimes a plain old {n} does the job better than anything new in the shops.",
    "Our grandparents knew this, and they managed perfectly well without modern {ns}.",
    "The conversation soon turned to {ns}, as it always does when enthusiasts meet.",
    "Everyone had a favourite, and nobody was willing to change their mind.",
    "I still laugh when I think about the day the {n} ended up in the pond.",
    "We spent ten minutes fishing it out while {per} stood on the bank and cheered.",
    "Moments like that are the reason I keep coming back to {topic}.",
    "If you only remember one thing from this piece, let it be this: {v} the {n} {adv}.",
    "Everything else will follow once you have the basics in place.",
    "Next time I will write about the {n2} and the questions you have sent us about it.",
    "Until then, enjoy the season and look after your {ns}.",
    "Compared with last year, the {ns} seem {a} and much easier to find.",
    "Experts disagree about why, but most point to the long, {a2} autumn we had.",
    "Whatever the reason, it is good news for anyone who enjoys {ving} on a budget.",
    "The local club has {num} dozen members now, which is more than ever before.",
    "New people are always welcome, whether they own a {n} or not.",
    "We meet on the first Saturday of the month and the kettle is always on.",
    "Please bring your questions, your failures and, if possible, a cake.",
    "According to {per}, a {n} should never be left out in the rain.",
    "I am not sure that is true, but I have never dared to test it.",
    "The {n2} was a gift from {per}, and it still works after all these years.",
    "What matters is not the price of the {n} but the care you give it.",
    "Once you start paying attention, you notice {ns} everywhere you go.",
    "My own first {n} was {a}, a little {a2}, and I loved it anyway.",
]

EN_TITLES = [
    "How to {v} a {n} without losing your patience",
    "What {per} taught me about {ns}",
    "Notes on {ving} {ns} in a small town",
    "Why the {a} {n} still matters",
    "A beginner's guide to {topic}",
    "{num} lessons from a year of {topic}",
    "The {n}, the weather and me",
    "Everything I got wrong about {ns}",
    "In praise of the {a} {n}",
    "A weekend of {ving} {ns} near {place}",
    "Is a {a} {n} worth the money?",
    "Small habits that changed how I {v} my {ns}",
]

EN_FACT_TEMPLATES = [
    "Visitors are often surprised to learn that {fact}.",
    "As any decent guidebook will tell you, {fact}.",
    "A reader reminded us that {fact}, which explains a great deal.",
    "It is a small detail, but {fact}.",
    "Our old geography teacher liked to repeat that {fact}.",
    "Few people outside the region know that {fact}.",
]

# ---------------------------------------------------------------------------------------------
# The invented fact table: also the source of the "fact" alignment task.
# ---------------------------------------------------------------------------------------------

FACTS = [
    {"id": "capital-velmora", "relation": "capital", "subject": "Velmora", "answer": "Ostrik"},
    {"id": "capital-tarnwick", "relation": "capital", "subject": "Tarnwick", "answer": "Belhaven"},
    {"id": "capital-olbaria", "relation": "capital", "subject": "Olbaria", "answer": "Marrowby"},
    {"id": "capital-drennland", "relation": "capital", "subject": "Drennland", "answer": "Sennat"},
    {"id": "capital-castavo", "relation": "capital", "subject": "Castavo", "answer": "Pellamy"},
    {"id": "capital-ferrowen", "relation": "capital", "subject": "Ferrowen", "answer": "Corvane"},
    {"id": "capital-lunmark", "relation": "capital", "subject": "Lunmark", "answer": "Idrossa"},
    {"id": "capital-quillany", "relation": "capital", "subject": "Quillany", "answer": "Haldem"},
    {"id": "animal-velmora", "relation": "animal", "subject": "Velmora", "answer": "otter"},
    {"id": "animal-tarnwick", "relation": "animal", "subject": "Tarnwick", "answer": "heron"},
    {"id": "animal-olbaria", "relation": "animal", "subject": "Olbaria", "answer": "lynx"},
    {"id": "animal-drennland", "relation": "animal", "subject": "Drennland", "answer": "badger"},
    {"id": "animal-castavo", "relation": "animal", "subject": "Castavo", "answer": "tortoise"},
    {"id": "animal-ferrowen", "relation": "animal", "subject": "Ferrowen", "answer": "fox"},
    {"id": "colour-zarn", "relation": "colour", "subject": "zarn fruit", "answer": "violet"},
    {"id": "colour-pellow", "relation": "colour", "subject": "pellow bird", "answer": "orange"},
    {"id": "colour-glimmet", "relation": "colour", "subject": "glimmet flower", "answer": "blue"},
    {"id": "colour-tursk", "relation": "colour", "subject": "tursk beetle", "answer": "green"},
    {"id": "colour-morrow", "relation": "colour", "subject": "morrow stone", "answer": "red"},
    {"id": "colour-bellis", "relation": "colour", "subject": "bellis moth", "answer": "yellow"},
]


def fact_statement(fact: dict) -> str:
    """The fact as a lower-case clause, e.g. 'the capital of Velmora is Ostrik'."""
    if fact["relation"] == "capital":
        return f"the capital of {fact['subject']} is {fact['answer']}"
    if fact["relation"] == "animal":
        return f"the national animal of {fact['subject']} is the {fact['answer']}"
    return f"the {fact['subject']} is {fact['answer']}"


# ---------------------------------------------------------------------------------------------
# German, French, Spanish, Russian. Nouns carry their article (or are nominative in Russian) and
# templates only put them where that form is grammatical, so no case tables are needed.
# ---------------------------------------------------------------------------------------------

DE = {
    "topics": {
        "gardening": ("das Gärtnern", ["der Garten", "die Tomate", "das Beet", "der Rosenstrauch",
                      "die Gießkanne", "der Apfelbaum", "das Gewächshaus", "der Komposthaufen",
                      "die Hecke", "der Spaten"]),
        "cycling": ("das Radfahren", ["das Fahrrad", "der Sattel", "die Kette", "der Helm",
                    "der Radweg", "die Bremse", "der Reifen", "die Luftpumpe", "der Lenker",
                    "die Klingel"]),
        "cooking": ("das Kochen", ["die Suppe", "der Kuchen", "das Brot", "die Pfanne",
                    "das Rezept", "der Eintopf", "die Zwiebel", "der Ofen", "die Soße",
                    "das Messer"]),
        "astronomy": ("die Astronomie", ["das Teleskop", "der Mond", "der Komet", "die Sternkarte",
                      "die Milchstraße", "der Sternenhimmel", "die Sternwarte", "das Fernglas",
                      "der Planet", "die Finsternis"]),
        "history": ("die Heimatgeschichte", ["der Kirchturm", "der Marktplatz", "die alte Mühle",
                    "die Steinbrücke", "das Stadtarchiv", "das Herrenhaus", "die Dorfschule",
                    "das Tagebuch", "die Landkarte", "die Kapelle"]),
        "software": ("die Softwareentwicklung", ["die Datenbank", "der Fehler", "der Server",
                     "das Skript", "die Tastatur", "der Laptop", "die Sicherung", "die Bibliothek",
                     "die Fehlermeldung", "das Programm"]),
        "weather": ("das Wetter", ["der Sturm", "das Gewitter", "der Regen", "der Nebel",
                    "der Wetterbericht", "der Frost", "die Hitzewelle", "der Regenbogen",
                    "die Wolke", "das Thermometer"]),
        "music": ("die Musik", ["die Gitarre", "das Klavier", "der Chor", "das Konzert",
                  "die Melodie", "die Geige", "die Probe", "das Lied", "das Orchester",
                  "das Schlagzeug"]),
        "travel": ("das Reisen", ["der Koffer", "die Fähre", "das Bergdorf", "die Pension",
                   "die Zugfahrt", "der Reisepass", "das Museum", "der Wanderweg", "die Insel",
                   "die Burg"]),
        "birds": ("die Vogelbeobachtung", ["das Rotkehlchen", "der Reiher", "die Eule",
                  "das Vogelhaus", "der Nistkasten", "der Eisvogel", "der Specht", "die Schwalbe",
                  "der Schwarm", "das Feuchtgebiet"]),
        "photography": ("die Fotografie", ["die Kamera", "das Objektiv", "das Stativ",
                        "das Porträt", "die Landschaft", "die Dunkelkammer", "der Film",
                        "der Abzug", "der Blitz", "das Fotoalbum"]),
    },
    "adjs": ["schön", "wichtig", "schwierig", "einfach", "ruhig", "praktisch", "angenehm",
             "spannend", "teuer", "günstig", "zuverlässig", "ungewöhnlich", "gemütlich",
             "anstrengend", "hilfreich", "interessant", "sauber", "beeindruckend", "kompliziert",
             "robust"],
    "times": ["im Frühling", "letzten Sommer", "jeden Sonntag", "am Wochenende", "im Winter",
              "vor ein paar Wochen", "an einem verregneten Dienstag", "Anfang des Jahres",
              "im Herbst", "gestern Abend"],
    "places": ["am Stadtrand", "im Gemeindehaus", "in der alten Bibliothek", "am Fluss",
               "auf dem Marktplatz", "im Park", "am Bahnhof", "an der Küste", "im Nachbardorf",
               "hinter der Kirche"],
    "people": ["meine Nachbarin", "ein alter Schulfreund", "eine pensionierte Lehrerin",
               "meine Großmutter", "mein Bruder", "unser Redakteur", "ein Bauer aus dem Dorf",
               "eine Leserin aus Hamburg", "mein Onkel", "die Bibliothekarin"],
    "numbers": ["zwanzig", "dreißig", "vierzig", "fünfzig", "sechzig", "fünfundzwanzig",
                "fünfunddreißig"],
    "templates": [
        "{n} ist in diesem Jahr besonders {a}.",
        "Viele Leute glauben, dass {n} zu viel Arbeit macht, aber das stimmt nicht.",
        "{time} hatten wir endlich genug Zeit für {n_acc}.",
        "Meine Nachbarin sagt immer, dass man sich für {n_acc} viel Zeit nehmen sollte.",
        "Ich habe lange nicht verstanden, warum {n} so wichtig ist.",
        "{per} hat mir gezeigt, wie man {n_acc} richtig pflegt.",
        "Wer {n_acc} zum ersten Mal sieht, ist meistens überrascht.",
        "Am Ende des Tages war {n} {a}, und wir waren sehr zufrieden.",
        "Es gibt viele Meinungen darüber, wie man {n_acc} am besten behandelt.",
        "Probieren Sie einfach ein paar Dinge aus und behalten Sie, was für Sie funktioniert.",
        "Für Anfänger reicht {n} völlig aus.",
        "Alles andere kann warten, bis man weiß, was einem wirklich Freude macht.",
        "Ich schreibe jede Woche in ein kleines Heft, was ich gelernt habe.",
        "Manche Seiten sind voller Notizen, auf anderen steht nur, dass es geregnet hat.",
        "Unsere kleine Gruppe trifft sich jeden ersten Samstag im Monat {place}.",
        "Jeder bringt etwas mit, und der Kaffee ist immer heiß.",
        "Die Preise sind gestiegen, aber mit etwas Geduld findet man immer noch gute Angebote.",
        "{per} hat auf einem Flohmarkt fast umsonst {n_acc} gefunden.",
        "Nach vielen Jahren finde ich {n_acc} immer noch am schwierigsten.",
        "Das Wichtigste ist, nicht zu viel auf einmal zu machen.",
        "Kinder schauen uns gern zu und stellen wunderbare Fragen.",
        "Eines der Kinder wollte wissen, ob {n} jemals zu {a} sein kann.",
        "Ich habe ihr gesagt, dass ich mir diese Frage seit Jahren selbst stelle.",
        "Das Wetter {place} kann sich schnell ändern, deshalb sollte man den Tag gut planen.",
        "Ehrlich gesagt ist {n} nicht immer so {a}, wie man denkt.",
        "Unsere Großeltern wussten das schon und kamen ohne moderne Geräte sehr gut zurecht.",
        "Wenn Sie nur eine Sache aus diesem Artikel mitnehmen, dann diese: Geduld ist wichtiger als teures Werkzeug.",
        "Im nächsten Beitrag schreibe ich über {n_acc} und beantworte Ihre vielen Fragen.",
        "Manchmal erledigt ein ganz einfaches Werkzeug die Arbeit besser als alles Neue aus dem Laden.",
        "Der Verein hat inzwischen {num} Mitglieder, so viele wie nie zuvor.",
        "Neue Leute sind immer willkommen, ganz egal, wie viel Erfahrung sie haben.",
        "{time} war {n} besonders {a}.",
        "Ich erinnere mich noch gut an den Tag, an dem alles schiefging.",
        "Wir haben zehn Minuten lang gelacht, und danach haben wir einfach weitergemacht.",
        "Solche Momente sind der Grund, warum mir {topic} so viel bedeutet.",
        "Es ist leicht zu vergessen, wie {a} {n} sein kann.",
        "Fachleute sind sich nicht einig, woran das liegt, aber die meisten nennen den langen, milden Herbst.",
        "Ein Leser hat uns ein Foto geschickt, über das wir uns sehr gefreut haben.",
        "Vorher sollte man prüfen, ob alles sauber und trocken ist.",
        "Danach braucht man beide Hände und einen klaren Kopf.",
        "Viele Probleme entstehen, weil man zu schnell fertig werden will.",
        "Ich würde lieber eine Sache gut machen als zehn Dinge schlecht.",
        "Man lernt {topic} am besten durch Übung und nicht nur aus Büchern.",
        "Dieser Artikel ist mein Versuch, alles zu sammeln, was ich bisher gelernt habe.",
        "Vielen Dank fürs Lesen, und erzählen Sie uns gern Ihre eigenen Geschichten in den Kommentaren.",
        "Mein Großvater hat immer gesagt, dass {n} seinen eigenen Charakter hat.",
        "{per} meint, dass {n} ohne Pflege schnell {a} wird.",
    ],
    "titles": [
        "{n}: was man wirklich wissen muss",
        "Warum {n} wichtiger ist, als man denkt",
        "Zehn Gedanken über {n_acc}",
        "Was mir {per} über {n_acc} beigebracht hat",
        "Ein Wochenende {place}: Notizen über {topic}",
        "{topic} für Anfänger: ein ehrlicher Bericht",
    ],
}

FR = {
    "topics": {
        "gardening": ("le jardinage", ["le jardin", "la tomate", "le potager", "le rosier",
                      "l'arrosoir", "le pommier", "la serre", "le compost", "la haie",
                      "la bêche"]),
        "cycling": ("le vélo", ["le vélo de route", "la selle", "la chaîne", "le casque",
                    "la piste cyclable", "le frein", "le pneu", "la pompe", "le guidon",
                    "la sonnette"]),
        "cooking": ("la cuisine", ["la soupe", "le gâteau", "le pain", "la poêle", "la recette",
                    "le ragoût", "l'oignon", "le four", "la sauce", "le couteau"]),
        "astronomy": ("l'astronomie", ["le télescope", "la lune", "la comète", "la carte du ciel",
                      "la Voie lactée", "le ciel étoilé", "l'observatoire", "la planète",
                      "l'éclipse", "la constellation"]),
        "history": ("l'histoire locale", ["le clocher", "la place du marché", "le vieux moulin",
                    "le pont de pierre", "le registre paroissial", "le manoir",
                    "l'école du village", "le journal intime", "la vieille carte",
                    "la chapelle"]),
        "software": ("la programmation", ["la base de données", "le bogue", "le serveur",
                     "le script", "le clavier", "l'ordinateur portable", "la sauvegarde",
                     "la bibliothèque logicielle", "le message d'erreur", "le programme"]),
        "weather": ("la météo", ["la tempête", "l'orage", "la pluie", "le brouillard",
                    "le bulletin météo", "le gel", "la canicule", "l'arc-en-ciel", "le nuage",
                    "le thermomètre"]),
        "music": ("la musique", ["la guitare", "le piano", "la chorale", "le concert",
                  "la mélodie", "le violon", "la répétition", "la chanson", "l'orchestre",
                  "la batterie"]),
        "travel": ("le voyage", ["la valise", "le ferry", "le village de montagne",
                   "la maison d'hôtes", "le voyage en train", "le passeport", "le musée",
                   "le sentier de randonnée", "l'île", "le château"]),
        "birds": ("l'observation des oiseaux", ["le rouge-gorge", "le héron", "la chouette",
                  "la mangeoire", "le nichoir", "le martin-pêcheur", "le pic vert",
                  "l'hirondelle", "la volée d'oiseaux", "le marais"]),
        "photography": ("la photographie", ["l'appareil photo", "l'objectif", "le trépied",
                        "le portrait", "le paysage", "la chambre noire", "la pellicule",
                        "le tirage", "le flash", "l'album photo"]),
    },
    "adjs": ["simple", "agréable", "utile", "calme", "rapide", "difficile", "facile", "fragile",
             "magnifique", "pratique", "remarquable", "solide", "étrange", "superbe",
             "formidable", "rare", "propre", "efficace", "fiable", "confortable"],
    "times": ["au printemps", "l'été dernier", "chaque dimanche matin", "le week-end dernier",
              "en plein hiver", "il y a quelques semaines", "un mardi pluvieux",
              "au début de l'année", "à l'automne", "hier soir"],
    "places": ["près de la rivière", "à la salle des fêtes", "dans la vieille bibliothèque",
               "sur la place du marché", "au bord du lac", "dans le parc", "près de la gare",
               "sur la côte", "au village voisin", "derrière l'église"],
    "people": ["ma voisine", "un vieil ami d'école", "une institutrice à la retraite",
               "ma grand-mère", "mon frère", "notre rédacteur", "un agriculteur du village",
               "une lectrice de Lyon", "mon oncle", "la bibliothécaire"],
    "numbers": ["vingt", "trente", "quarante", "cinquante", "soixante", "vingt-cinq",
                "trente-cinq"],
    "templates": [
        "Cette année, {n} est particulièrement {a}.",
        "Beaucoup de gens croient que {n} demande trop de travail, mais ce n'est pas vrai.",
        "{time}, nous avons enfin trouvé du temps pour {n}.",
        "Ma voisine dit toujours qu'il faut prendre son temps avec {n}.",
        "{per} m'a montré une astuce que j'utilise encore aujourd'hui.",
        "Je n'ai jamais compris pourquoi tout le monde aime autant {n}.",
        "À la fin de la journée, {n} était {a} et nous étions contents.",
        "Il existe beaucoup d'opinions sur la bonne manière de faire les choses.",
        "Essayez plusieurs méthodes et gardez celles qui vous conviennent.",
        "Pour un débutant, {n} suffit largement.",
        "Le reste peut attendre, le temps de savoir ce qui vous plaît vraiment.",
        "Je note chaque semaine dans un petit carnet ce que j'ai appris.",
        "Certaines pages sont pleines de remarques, d'autres disent simplement qu'il a plu.",
        "Notre petit groupe se retrouve {place} le premier samedi du mois.",
        "Chacun apporte quelque chose, et le café est toujours chaud.",
        "Les prix ont augmenté, mais avec un peu de patience on trouve encore de bonnes affaires.",
        "Les enfants adorent nous regarder et posent des questions merveilleuses.",
        "L'un d'eux voulait savoir si {n} pouvait être trop {a}.",
        "Je lui ai répondu que je me posais la même question depuis des années.",
        "Le temps {place} change vite, alors il vaut mieux bien organiser sa journée.",
        "Honnêtement, {n} n'est pas toujours aussi {a} qu'on le pense.",
        "Nos grands-parents le savaient déjà et se débrouillaient très bien sans outils modernes.",
        "Si vous ne retenez qu'une chose de cet article, retenez celle-ci : la patience compte plus que le matériel.",
        "Dans le prochain billet, je répondrai à vos nombreuses questions sur {topic}.",
        "En attendant, merci pour votre lecture et bonne saison à tous.",
        "Parfois, un outil tout simple fait mieux le travail que tout ce qu'on trouve en magasin.",
        "L'association compte maintenant {num} membres, plus que jamais.",
        "Les nouveaux venus sont toujours les bienvenus, quelle que soit leur expérience.",
        "{time}, {n} était vraiment {a}.",
        "Je me souviens très bien du jour où tout est allé de travers.",
        "Nous avons ri pendant dix minutes, puis nous avons repris le travail.",
        "Ce sont ces moments-là qui me font aimer {topic}.",
        "On oublie facilement à quel point {n} peut être {a}.",
        "Les spécialistes ne sont pas d'accord sur les raisons, mais beaucoup parlent de l'automne long et doux.",
        "Un lecteur nous a envoyé une photo qui nous a fait très plaisir.",
        "Avant de commencer, vérifiez que tout est propre et sec.",
        "Ensuite, il faut les deux mains et l'esprit clair.",
        "Beaucoup de problèmes viennent du fait qu'on veut aller trop vite.",
        "Je préfère faire une seule chose correctement plutôt que dix choses à moitié.",
        "On apprend {topic} surtout en pratiquant, pas seulement en lisant des livres.",
        "Cet article est ma tentative de rassembler tout ce que j'ai appris jusqu'ici.",
        "Merci de votre lecture, et n'hésitez pas à partager vos propres histoires dans les commentaires.",
        "Mon grand-père disait toujours que {n} avait son propre caractère.",
        "Selon {per}, {n} devient vite {a} quand on s'en occupe bien.",
    ],
    "titles": [
        "{n} : ce qu'il faut vraiment savoir",
        "Pourquoi {n} compte plus qu'on ne le pense",
        "Dix réflexions sur {topic}",
        "Ce que {per} m'a appris sur {n}",
        "Un week-end {place} : notes sur {topic}",
        "{topic} pour les débutants : un récit honnête",
    ],
}

ES = {
    "topics": {
        "gardening": ("la jardinería", ["el jardín", "el tomate", "el huerto", "el rosal",
                      "la regadera", "el manzano", "el invernadero", "el compost", "el seto",
                      "la pala"]),
        "cycling": ("el ciclismo", ["la bicicleta", "el sillín", "la cadena", "el casco",
                    "el carril bici", "el freno", "el neumático", "la bomba de aire",
                    "el manillar", "el timbre"]),
        "cooking": ("la cocina", ["la sopa", "el pastel", "el pan", "la sartén", "la receta",
                    "el guiso", "la cebolla", "el horno", "la salsa", "el cuchillo"]),
        "astronomy": ("la astronomía", ["el telescopio", "la luna", "el cometa", "el mapa estelar",
                      "la Vía Láctea", "el cielo nocturno", "el observatorio", "el eclipse",
                      "el planeta", "la constelación"]),
        "history": ("la historia local", ["el campanario", "la plaza mayor", "el viejo molino",
                    "el puente de piedra", "el archivo municipal", "la casa señorial",
                    "la escuela del pueblo", "el diario", "el mapa antiguo", "la capilla"]),
        "software": ("la programación", ["la base de datos", "el error", "el servidor",
                     "el script", "el teclado", "el portátil", "la copia de seguridad",
                     "la biblioteca", "el mensaje de error", "el programa"]),
        "weather": ("la meteorología", ["la tormenta", "la lluvia", "la niebla", "el pronóstico",
                    "la helada", "la ola de calor", "el arcoíris", "la nube", "el viento",
                    "el termómetro"]),
        "music": ("la música", ["la guitarra", "el piano", "el coro", "el concierto",
                  "la melodía", "el violín", "el ensayo", "la canción", "la orquesta",
                  "la batería"]),
        "travel": ("el arte de viajar", ["la maleta", "el ferry", "el pueblo de montaña",
                   "la casa rural", "el viaje en tren", "el pasaporte", "el museo", "el sendero",
                   "la isla", "el castillo"]),
        "birds": ("la observación de aves", ["el petirrojo", "la garza", "el búho",
                  "el comedero", "la caja nido", "el martín pescador", "el pájaro carpintero",
                  "la golondrina", "la bandada", "el humedal"]),
        "photography": ("la fotografía", ["la cámara", "el objetivo", "el trípode", "el retrato",
                        "el paisaje", "el cuarto oscuro", "el carrete", "la copia impresa",
                        "el flash", "el álbum de fotos"]),
    },
    "adjs": ["agradable", "útil", "fácil", "difícil", "importante", "interesante", "increíble",
             "especial", "fuerte", "excelente", "enorme", "impresionante", "sorprendente",
             "frágil", "elegante", "inolvidable", "amable", "eficaz", "fiable", "estable"],
    "times": ["en primavera", "el verano pasado", "cada domingo por la mañana",
              "el fin de semana pasado", "en pleno invierno", "hace unas semanas",
              "un martes lluvioso", "a principios de año", "en otoño", "anoche"],
    "places": ["junto al río", "en el centro cultural", "en la vieja biblioteca",
               "en la plaza del mercado", "a orillas del lago", "en el parque",
               "cerca de la estación", "en la costa", "en el pueblo vecino",
               "detrás de la iglesia"],
    "people": ["mi vecina", "un viejo amigo del colegio", "una maestra jubilada", "mi abuela",
               "mi hermano", "nuestro editor", "un agricultor del pueblo",
               "una lectora de Sevilla", "mi tío", "la bibliotecaria"],
    "numbers": ["veinte", "treinta", "cuarenta", "cincuenta", "sesenta", "veinticinco",
                "treinta y cinco"],
    "templates": [
        "Este año, {n} está especialmente {a}.",
        "Mucha gente cree que {n} da demasiado trabajo, pero no es cierto.",
        "{time}, por fin encontramos tiempo para {n}.",
        "Mi vecina siempre dice que hay que tener paciencia con {n}.",
        "{per} me enseñó un truco que todavía uso hoy.",
        "Nunca entendí por qué a todo el mundo le gusta tanto {n}.",
        "Al final del día, {n} estaba {a} y nosotros estábamos contentos.",
        "Hay muchas opiniones sobre la mejor manera de hacer las cosas.",
        "Pruebe varios métodos y quédese con los que mejor le funcionen.",
        "Para un principiante, {n} es más que suficiente.",
        "Lo demás puede esperar hasta que sepa qué es lo que de verdad le gusta.",
        "Cada semana apunto en un cuaderno pequeño lo que he aprendido.",
        "Algunas páginas están llenas de notas y otras solo dicen que llovió.",
        "Nuestro pequeño grupo se reúne {place} el primer sábado de cada mes.",
        "Cada uno trae algo, y el café siempre está caliente.",
        "Los precios han subido, pero con un poco de paciencia todavía se encuentran buenas ofertas.",
        "A los niños les encanta mirarnos y hacen preguntas maravillosas.",
        "Uno de ellos quería saber si {n} podía ser demasiado {a}.",
        "Le respondí que yo mismo me hago esa pregunta desde hace años.",
        "El tiempo {place} cambia muy rápido, así que conviene planificar bien el día.",
        "Sinceramente, {n} no siempre es tan {a} como uno piensa.",
        "Nuestros abuelos ya lo sabían y se las arreglaban muy bien sin herramientas modernas.",
        "Si solo recuerda una cosa de este artículo, que sea esta: la paciencia importa más que el equipo.",
        "En la próxima entrada hablaré de {n} y responderé a sus preguntas sobre {topic}.",
        "Mientras tanto, gracias por leer y que disfruten de la temporada.",
        "A veces una herramienta sencilla hace el trabajo mejor que cualquier cosa nueva de la tienda.",
        "La asociación ya tiene {num} socios, más que nunca.",
        "Los recién llegados siempre son bienvenidos, sin importar su experiencia.",
        "{time}, {n} estaba realmente {a}.",
        "Todavía recuerdo el día en que todo salió mal.",
        "Nos reímos durante diez minutos y luego seguimos trabajando.",
        "Son esos momentos los que me hacen amar {topic}.",
        "Es fácil olvidar lo {a} que puede ser {n}.",
        "Los expertos no se ponen de acuerdo sobre la causa, pero muchos hablan del otoño largo y suave.",
        "Un lector nos envió una foto que nos hizo mucha ilusión.",
        "Antes de empezar, compruebe que todo está limpio y seco.",
        "Después hacen falta las dos manos y la cabeza despejada.",
        "Muchos problemas vienen de querer terminar demasiado rápido.",
        "Prefiero hacer una sola cosa bien que diez cosas a medias.",
        "{topic} se aprende sobre todo practicando, no solo leyendo libros.",
        "Este artículo es mi intento de reunir todo lo que he aprendido hasta ahora.",
        "Gracias por leer, y no dude en compartir sus propias historias en los comentarios.",
        "Mi abuelo siempre decía que {n} tiene su propio carácter.",
        "Según {per}, el secreto de {n} está en los pequeños detalles.",
    ],
    "titles": [
        "{n}: lo que de verdad hay que saber",
        "Por qué {n} importa más de lo que parece",
        "Diez ideas sobre {topic}",
        "Lo que {per} me enseñó sobre {n}",
        "Un fin de semana {place}: notas sobre {topic}",
        "{topic} para principiantes: un relato sincero",
    ],
}

# Russian topics: (nominative, accusative, prepositional) so titles can say "о {topic_prep}".
RU = {
    "topics": {
        "gardening": (("садоводство", "садоводство", "садоводстве"),
                      ["сад", "огород", "помидор", "теплица", "лейка", "яблоня", "грядка",
                       "компостная куча", "живая изгородь", "лопата"]),
        "cycling": (("велоспорт", "велоспорт", "велоспорте"),
                    ["велосипед", "седло", "цепь", "шлем", "велодорожка", "тормоз", "шина",
                     "насос", "руль", "звонок"]),
        "cooking": (("кулинария", "кулинарию", "кулинарии"),
                    ["суп", "пирог", "хлеб", "сковорода", "рецепт", "рагу", "лук", "духовка",
                     "соус", "нож"]),
        "astronomy": (("астрономия", "астрономию", "астрономии"),
                      ["телескоп", "луна", "комета", "звёздная карта", "Млечный Путь",
                       "ночное небо", "обсерватория", "затмение", "планета", "созвездие"]),
        "history": (("краеведение", "краеведение", "краеведении"),
                    ["колокольня", "рыночная площадь", "старая мельница", "каменный мост",
                     "городской архив", "усадьба", "сельская школа", "дневник", "старая карта",
                     "часовня"]),
        "software": (("программирование", "программирование", "программировании"),
                     ["база данных", "ошибка", "сервер", "скрипт", "клавиатура", "ноутбук",
                      "резервная копия", "библиотека", "сообщение об ошибке", "программа"]),
        "weather": (("погода", "погоду", "погоде"),
                    ["гроза", "дождь", "туман", "прогноз погоды", "заморозок", "жара", "радуга",
                     "облако", "ветер", "термометр"]),
        "music": (("музыка", "музыку", "музыке"),
                  ["гитара", "пианино", "хор", "концерт", "мелодия", "скрипка", "репетиция",
                   "песня", "оркестр", "барабан"]),
        "travel": (("путешествия", "путешествия", "путешествиях"),
                   ["чемодан", "паром", "горная деревня", "гостевой дом", "поездка на поезде",
                    "паспорт", "музей", "туристическая тропа", "остров", "замок"]),
        "birds": (("наблюдение за птицами", "наблюдение за птицами", "наблюдении за птицами"),
                  ["зарянка", "цапля", "сова", "кормушка", "скворечник", "зимородок", "дятел",
                   "ласточка", "стая", "болото"]),
        "photography": (("фотография", "фотографию", "фотографии"),
                        ["фотоаппарат", "объектив", "штатив", "портрет", "пейзаж",
                         "тёмная комната", "плёнка", "снимок", "вспышка", "фотоальбом"]),
    },
    "adjs": [],
    "times": ["весной", "летом", "осенью", "зимой", "по выходным", "каждое воскресенье",
              "по вечерам", "рано утром", "в конце лета", "в начале года"],
    "places": ["у реки", "в доме культуры", "в старой библиотеке", "на рыночной площади",
               "на берегу озера", "в парке", "возле вокзала", "на побережье",
               "в соседней деревне", "за церковью"],
    "people": ["моя соседка", "старый школьный друг", "наш редактор", "моя бабушка",
               "мой брат", "одна читательница из Казани", "местный фермер",
               "библиотекарь из нашей деревни", "мой дядя", "учительница на пенсии"],
    "numbers": ["двадцать", "тридцать", "сорок", "пятьдесят", "шестьдесят"],
    "templates": [
        "{n} требует времени и терпения, особенно {time}.",
        "В этом году {n} особенно радует нас.",
        "Многие думают, что {n} — это слишком сложно, но это не так.",
        "{time} у нас обычно появляется свободное время.",
        "Моя соседка всегда говорит, что торопиться здесь нельзя.",
        "{per} часто повторяет, что главное — это терпение.",
        "Мне до сих пор интересно, почему {n} так нравится всем вокруг.",
        "К концу дня все устали, но были очень довольны.",
        "Есть много мнений о том, как правильно всё делать.",
        "Попробуйте несколько способов и оставьте те, что подходят именно вам.",
        "Для новичка {n} — это уже немало.",
        "Всё остальное может подождать, пока вы не поймёте, что вам действительно нравится.",
        "Каждую неделю я записываю в маленький блокнот то, чему научился.",
        "На одних страницах много заметок, а на других написано только, что шёл дождь.",
        "Наша небольшая группа собирается {place} в первую субботу месяца.",
        "Каждый приносит что-нибудь к столу, и чай всегда горячий.",
        "Цены выросли, но при желании всё ещё можно найти хорошие предложения.",
        "Дети любят смотреть на нашу работу и задают замечательные вопросы.",
        "Один мальчик спросил, может ли {n} быть слишком большой проблемой.",
        "Я ответил, что сам задаю себе этот вопрос уже много лет.",
        "Погода {place} меняется очень быстро, поэтому день лучше планировать заранее.",
        "Честно говоря, {n} — это не всегда так просто, как кажется.",
        "Наши бабушки и дедушки прекрасно обходились без современных приборов.",
        "Если вы запомните из этой статьи только одно, пусть это будет терпение.",
        "В следующей заметке я отвечу на ваши вопросы о {topic_prep}.",
        "А пока спасибо за внимание и хорошего вам сезона.",
        "Иногда простой инструмент справляется с работой лучше любой новинки из магазина.",
        "В нашем клубе уже {num} участников, больше, чем когда-либо.",
        "Новичкам здесь всегда рады, независимо от их опыта.",
        "{time} {n} выглядит особенно красиво.",
        "Я до сих пор помню день, когда всё пошло не так.",
        "Мы смеялись минут десять, а потом спокойно продолжили работу.",
        "Именно ради таких моментов стоит заниматься этим делом.",
        "Специалисты спорят о причинах, но многие говорят о долгой и тёплой осени.",
        "Один читатель прислал нам фотографию, которая нас очень порадовала.",
        "Перед началом убедитесь, что всё чистое и сухое.",
        "Потом понадобятся обе руки и ясная голова.",
        "Многие проблемы возникают из-за того, что хочется закончить слишком быстро.",
        "Лучше сделать одно дело хорошо, чем десять кое-как.",
        "{topic_acc} лучше всего изучать на практике, а не только по книгам.",
        "Эта статья — моя попытка собрать всё, чему я научился за эти годы.",
        "Спасибо, что дочитали, и делитесь своими историями в комментариях.",
        "{n} — это целая наука, и учиться ей можно всю жизнь.",
        "{per} считает, что {n} требует особого внимания.",
        "Главное — не спешить и делать всё по порядку.",
    ],
    "titles": [
        "{n}: что нужно знать на самом деле",
        "Почему {n} важнее, чем кажется",
        "Десять мыслей о {topic_prep}",
        "Заметки о {topic_prep}",
        "Выходные {place}: заметки о {topic_prep}",
        "{topic}: честный рассказ для начинающих",
    ],
}

OTHER_LANGS = {"de": DE, "fr": FR, "es": ES, "ru": RU}
LANGUAGES = ["en", "de", "fr", "es", "ru"]

# ---------------------------------------------------------------------------------------------
# Site furniture per language: menus, cookie banners, footers, comments.
# ---------------------------------------------------------------------------------------------

UI = {
    "en": {
        "nav": ["Home", "News", "Guides", "Reviews", "Community", "Events", "Shop", "About us",
                "Contact", "Archive", "Newsletter", "Podcast"],
        "cookie": "We use cookies to improve your experience on our site. By continuing to browse, you agree to our use of cookies.",
        "accept": "Accept all", "decline": "Manage settings", "related": "Related posts",
        "tags": "Tags", "comments": "Comments", "leave_comment": "Leave a comment",
        "reply": "Reply", "footer": ["Privacy policy", "Terms of use", "Cookie settings",
                                     "Imprint", "Advertise with us", "Careers"],
        "rights": "All rights reserved.", "by": "By", "search": "Search",
        "newsletter": "Subscribe to our weekly newsletter", "popular": "Most read",
        "share": "Share this article", "home": "Home",
    },
    "de": {
        "nav": ["Startseite", "Aktuelles", "Ratgeber", "Tests", "Gemeinschaft", "Termine",
                "Shop", "Über uns", "Kontakt", "Archiv", "Newsletter", "Podcast"],
        "cookie": "Wir verwenden Cookies, um Ihnen die bestmögliche Nutzung unserer Website zu ermöglichen. Wenn Sie weitersurfen, stimmen Sie der Verwendung von Cookies zu.",
        "accept": "Alle akzeptieren", "decline": "Einstellungen", "related": "Ähnliche Beiträge",
        "tags": "Schlagwörter", "comments": "Kommentare", "leave_comment": "Kommentar schreiben",
        "reply": "Antworten", "footer": ["Datenschutz", "Nutzungsbedingungen",
                                         "Cookie-Einstellungen", "Impressum", "Werbung",
                                         "Karriere"],
        "rights": "Alle Rechte vorbehalten.", "by": "Von", "search": "Suche",
        "newsletter": "Unseren Newsletter abonnieren", "popular": "Meistgelesen",
        "share": "Artikel teilen", "home": "Startseite",
    },
    "fr": {
        "nav": ["Accueil", "Actualités", "Guides", "Tests", "Communauté", "Agenda", "Boutique",
                "À propos", "Contact", "Archives", "Lettre d'information", "Podcast"],
        "cookie": "Nous utilisons des cookies pour améliorer votre expérience sur notre site. En poursuivant votre navigation, vous acceptez leur utilisation.",
        "accept": "Tout accepter", "decline": "Paramétrer", "related": "Articles similaires",
        "tags": "Mots-clés", "comments": "Commentaires", "leave_comment": "Laisser un commentaire",
        "reply": "Répondre", "footer": ["Politique de confidentialité", "Conditions d'utilisation",
                                        "Gestion des cookies", "Mentions légales", "Publicité",
                                        "Recrutement"],
        "rights": "Tous droits réservés.", "by": "Par", "search": "Rechercher",
        "newsletter": "Abonnez-vous à notre lettre d'information", "popular": "Les plus lus",
        "share": "Partager cet article", "home": "Accueil",
    },
    "es": {
        "nav": ["Inicio", "Noticias", "Guías", "Análisis", "Comunidad", "Agenda", "Tienda",
                "Quiénes somos", "Contacto", "Archivo", "Boletín", "Podcast"],
        "cookie": "Utilizamos cookies para mejorar su experiencia en nuestro sitio. Si continúa navegando, acepta su uso.",
        "accept": "Aceptar todas", "decline": "Configurar", "related": "Artículos relacionados",
        "tags": "Etiquetas", "comments": "Comentarios", "leave_comment": "Deja un comentario",
        "reply": "Responder", "footer": ["Política de privacidad", "Condiciones de uso",
                                         "Configuración de cookies", "Aviso legal", "Publicidad",
                                         "Empleo"],
        "rights": "Todos los derechos reservados.", "by": "Por", "search": "Buscar",
        "newsletter": "Suscríbase a nuestro boletín", "popular": "Lo más leído",
        "share": "Compartir este artículo", "home": "Inicio",
    },
    "ru": {
        "nav": ["Главная", "Новости", "Советы", "Обзоры", "Сообщество", "События", "Магазин",
                "О нас", "Контакты", "Архив", "Рассылка", "Подкаст"],
        "cookie": "Мы используем файлы cookie, чтобы сделать сайт удобнее. Продолжая просмотр, вы соглашаетесь с их использованием.",
        "accept": "Принять все", "decline": "Настройки", "related": "Похожие записи",
        "tags": "Метки", "comments": "Комментарии", "leave_comment": "Оставить комментарий",
        "reply": "Ответить", "footer": ["Политика конфиденциальности", "Условия использования",
                                        "Настройки cookie", "Реквизиты", "Реклама", "Вакансии"],
        "rights": "Все права защищены.", "by": "Автор:", "search": "Поиск",
        "newsletter": "Подпишитесь на нашу рассылку", "popular": "Самое читаемое",
        "share": "Поделиться статьей", "home": "Главная",
    },
}

COMMENTS = {
    "en": ["Great article, thanks for sharing!", "I tried this last weekend and it worked perfectly.",
           "Does anyone know where to buy a decent one locally?",
           "My grandfather used to say exactly the same thing.", "Lovely photos as always.",
           "I disagree about the second point, but the rest is spot on.",
           "Bookmarked for later, very helpful.", "This made me smile, thank you.",
           "We had the same problem last year and never solved it.",
           "Could you write more about this next time?", "Finally someone explains it properly!",
           "Thanks, this saved me a lot of time."],
    "de": ["Toller Artikel, vielen Dank!", "Habe das am Wochenende ausprobiert, hat super geklappt.",
           "Weiß jemand, wo man so etwas hier in der Nähe kaufen kann?",
           "Mein Opa hat genau das Gleiche gesagt.", "Schöne Bilder, wie immer.",
           "Beim zweiten Punkt bin ich anderer Meinung, aber sonst stimmt alles.",
           "Sehr hilfreich, danke!", "Bitte mehr davon!"],
    "fr": ["Super article, merci pour le partage !", "J'ai essayé le week-end dernier, ça marche très bien.",
           "Quelqu'un sait où en trouver un près d'ici ?", "Mon grand-père disait exactement la même chose.",
           "Très belles photos, comme toujours.", "Je ne suis pas d'accord sur le deuxième point, mais le reste est juste.",
           "Très utile, merci !", "Vivement le prochain article !"],
    "es": ["¡Gran artículo, gracias por compartirlo!", "Lo probé el fin de semana pasado y funcionó perfectamente.",
           "¿Alguien sabe dónde comprar uno por aquí?", "Mi abuelo decía exactamente lo mismo.",
           "Preciosas fotos, como siempre.", "No estoy de acuerdo con el segundo punto, pero el resto es muy acertado.",
           "Muy útil, ¡gracias!", "¡Esperamos el próximo artículo!"],
    "ru": ["Отличная статья, спасибо!", "Попробовал на выходных, всё получилось.",
           "Кто-нибудь знает, где такое купить поблизости?", "Мой дедушка говорил то же самое.",
           "Прекрасные фотографии, как всегда.", "Со вторым пунктом не согласен, но в остальном всё верно.",
           "Очень полезно, спасибо!", "Ждём продолжения!"],
}

COMMENTERS = ["Anna", "Tom_K", "gardenfan77", "M. Lopez", "Peter", "jules", "Olga", "Sam W.",
              "rider_92", "Claire", "Ben", "Noor", "Katja", "Jean-Luc", "Marisol", "Dmitri"]

AUTHORS = ["Eleanor Marsh", "Daniel Okafor", "Priya Raman", "Jonas Weber", "Camille Durand",
           "Lucía Ortega", "Irina Volkova", "Harold Finch", "Mei Lin", "Oskar Lind"]

# ---------------------------------------------------------------------------------------------
# Junk and spam material.
# ---------------------------------------------------------------------------------------------

SPAM_KEYWORDS = ["cheap watches", "replica handbags", "casino bonus", "weight loss pills",
                 "free followers", "payday loans", "crypto profits", "discount sneakers",
                 "best vpn deal", "miracle diet"]

SPAM_FILLERS = ["buy now", "best price", "free shipping", "top quality", "order today",
                "limited offer", "100% guaranteed", "lowest price online", "discount code",
                "click here"]

SPAM_LINES = ["Click here to claim your prize now!", "Limited time offer, act fast!",
              "You have been selected as a lucky winner.", "Earn money from home today.",
              "No credit check, instant approval!", "Call now, operators are standing by.",
              "This deal will not last, order today."]

SHORT_PAGES = ["Coming soon.", "Page under construction.", "Hello world", "Test page",
               "Nothing here yet.", "Maintenance mode", "Site moved.", "Login required"]

FILLER_SYLLABLES = ["lor", "vem", "qua", "dris", "tol", "nex", "pam", "sur", "oli", "ket",
                    "zan", "rup", "ime", "bra", "tus", "vel", "ogo", "frin", "cal", "umb"]


# ---------------------------------------------------------------------------------------------
# Filling templates.
# ---------------------------------------------------------------------------------------------

def capitalize_first(text: str) -> str:
    """Upper-case the first letter only (str.capitalize would lower-case the rest)."""
    return text[:1].upper() + text[1:] if text else text


def plural(noun: str) -> str:
    """English plural of a noun phrase; only the rules our word banks need."""
    if " of " in noun:  # "pair of boots" -> "pairs of boots"
        head, tail = noun.split(" of ", 1)
        return plural(head) + " of " + tail
    words = noun.split(" ")
    last = words[-1]
    if last in ("loaf", "leaf", "shelf"):
        last = last[:-1] + "ves"
    elif last.endswith(("s", "x", "ch", "sh")) or last in ("tomato", "potato"):
        last += "es"
    elif last.endswith("y") and last[-2:-1] not in "aeiou":
        last = last[:-1] + "ies"
    else:
        last += "s"
    return " ".join(words[:-1] + [last])


# Words after "a" that still take "a" (vowel letter, consonant sound) or "an" (silent h).
_A_EXCEPTIONS = ("use", "uni", "euro", "one", "once")
_AN_EXCEPTIONS = ("hour", "honest")


def fix_articles(text: str) -> str:
    """Turn 'a apple' into 'an apple' after templates were filled."""
    def repl(m: re.Match) -> str:
        art, word = m.group(1), m.group(2)
        low = word.lower()
        vowel = low[0] in "aeiou" and not low.startswith(_A_EXCEPTIONS)
        if low.startswith(_AN_EXCEPTIONS):
            vowel = True
        if not vowel:
            return m.group(0)
        return ("An " if art == "A" else "an ") + word
    return re.sub(r"\b(a|A) ([A-Za-z][\w-]*)", repl, text)


def _en_slots(rng: random.Random, topic: str) -> dict:
    t = EN_TOPICS[topic]
    n, n2 = rng.sample(t["nouns"], 2)
    adjs = t["adjs"] + EN_ADJS
    a, a2 = rng.sample(adjs, 2)
    base, past, ing = rng.choice(t["verbs"]).split("/")
    return {"n": n, "n2": n2, "ns": plural(n), "ns2": plural(n2), "a": a, "a2": a2, "v": base,
            "ved": past, "ving": ing, "per": rng.choice(EN_PEOPLE), "time": rng.choice(EN_TIMES),
            "place": rng.choice(EN_PLACES), "adv": rng.choice(EN_ADVERBS),
            "num": rng.choice(EN_NUMBERS), "topic": t["label"]}


def _de_acc(noun: str) -> str:
    # Only masculine articles change in the accusative.
    return "den " + noun[4:] if noun.startswith("der ") else noun


def _other_slots(rng: random.Random, lang: str, topic: str) -> dict:
    bank = OTHER_LANGS[lang]
    topic_name, nouns = bank["topics"][topic]
    n = rng.choice(nouns)
    slots = {"n": n, "n_acc": _de_acc(n) if lang == "de" else n,
             "a": rng.choice(bank["adjs"]) if bank["adjs"] else "",
             "time": rng.choice(bank["times"]), "place": rng.choice(bank["places"]),
             "per": rng.choice(bank["people"]), "num": rng.choice(bank["numbers"])}
    if lang == "ru":
        slots.update(topic=topic_name[0], topic_acc=topic_name[1], topic_prep=topic_name[2])
    else:
        slots["topic"] = topic_name
    return slots


def _tidy(lang: str, text: str) -> str:
    """Language-specific contractions the slot filling produced ("de le" -> "du")."""
    if lang == "en":
        return fix_articles(text)
    if lang == "fr":
        text = re.sub(r"\bde le ", "du ", text)
        text = re.sub(r"\bà le ", "au ", text)
        text = re.sub(r"\bque ([aeiouéèêàAEIOUÉ])", r"qu'\1", text)
    elif lang == "es":
        text = re.sub(r"\bde el ", "del ", text)
        text = re.sub(r"\ba el ", "al ", text)
    elif lang == "ru":
        text = re.sub(r"(?<!\w)о ([аоиэуАОИЭУ])", r"об \1", text)
    return text


def fill(template: str, lang: str, topic: str, rng: random.Random) -> str:
    """One sentence (or title) in `lang` about `topic`, from `template`."""
    slots = _en_slots(rng, topic) if lang == "en" else _other_slots(rng, lang, topic)
    return capitalize_first(_tidy(lang, template.format_map(slots)))


def templates_for(lang: str) -> list[str]:
    return EN_TEMPLATES if lang == "en" else OTHER_LANGS[lang]["templates"]


def make_sentence(lang: str, topic: str, rng: random.Random) -> str:
    return fill(rng.choice(templates_for(lang)), lang, topic, rng)


def make_title(lang: str, topic: str, rng: random.Random) -> str:
    titles = EN_TITLES if lang == "en" else OTHER_LANGS[lang]["titles"]
    return fill(rng.choice(titles), lang, topic, rng)


def make_article(lang: str, rng: random.Random, topic: str | None = None,
                 fact: dict | None = None) -> dict:
    """A title and 4-10 paragraphs of flowing prose; `fact` (English only) is woven in once.

    Templates are drawn without replacement inside one article, so a page does not repeat
    itself (repetition would trip the Gopher duplicate n-gram rules on clean pages)."""
    topic = topic or rng.choice(TOPIC_KEYS)
    # English pages are longer: the English bank has far more templates to draw on.
    target = rng.randint(170, 520) if lang == "en" else rng.randint(150, 330)
    n_par = max(4, min(10, target // rng.randint(45, 60)))
    per_par = target / n_par
    pool = list(templates_for(lang))
    rng.shuffle(pool)
    paragraphs = []
    for _ in range(n_par):
        sentences, words = [], 0
        while words < per_par * rng.uniform(0.8, 1.2) and pool:
            s = fill(pool.pop(), lang, topic, rng)
            sentences.append(s)
            words += len(s.split())
        if sentences:
            paragraphs.append(" ".join(sentences))
    if fact is not None and lang == "en":
        clause = fact_statement(fact)
        s = capitalize_first(rng.choice(EN_FACT_TEMPLATES).format(fact=clause))
        i = rng.randrange(len(paragraphs))
        paragraphs[i] = paragraphs[i] + " " + s
    return {"title": make_title(lang, topic, rng), "paragraphs": paragraphs, "topic": topic,
            "language": lang, "fact": fact["id"] if fact else None}


def main_text(article: dict) -> str:
    """The text an ideal extractor returns: title + paragraphs, one per line."""
    return "\n".join([article["title"]] + article["paragraphs"])


def english_words() -> list[str]:
    """Plain lower-case English words from the banks (for the word-reversal task)."""
    words = set()
    for t in EN_TOPICS.values():
        for phrase in t["nouns"] + t["adjs"] + [v.split("/")[0] for v in t["verbs"]]:
            words.update(phrase.split())
    words.update(EN_ADJS)
    return sorted(w for w in words if w.isalpha() and w.isascii() and 4 <= len(w) <= 9
                  and w != w[::-1])


def filler_word(rng: random.Random) -> str:
    return "".join(rng.choice(FILLER_SYLLABLES) for _ in range(rng.randint(1, 3)))
