"""The demo reranker's training texts (:mod:`rerank.converters.demo`): short English queries and
passages on varied topics, written for this package (no downloaded data set).

Each topic is a few queries (questions and keyword searches) and a few passages about it. Nothing
here is a relevance label: the teacher (all-MiniLM-L6-v2's own similarity) scores every pair the
demo trains on, and the topics only decide which pairs are drawn. :data:`SHORT` are replies and
fragments that answer nothing, so that the student sees documents without content.
"""

from __future__ import annotations

Topic = tuple[tuple[str, ...], tuple[str, ...]]
"""(queries, passages)."""

TOPICS: tuple[Topic, ...] = (
    (
        ("How do volcanoes erupt?", "volcano eruption causes", "What is magma made of?"),
        (
            "A volcano erupts when molten rock, called magma, rises through cracks in the crust and the "
            "pressure of its dissolved gases blasts it out at the surface.",
            "Magma is a mixture of molten silicate rock, crystals and dissolved gases such as water vapour "
            "and carbon dioxide.",
            "Mount Vesuvius buried the Roman towns of Pompeii and Herculaneum under ash in the year 79.",
            "Shield volcanoes such as those of Hawaii have gentle slopes built by runny basalt lava flows.",
        ),
    ),
    (
        ("Why is the sky blue?", "colour of the sky during the day", "what makes sunsets red"),
        (
            "Sunlight is scattered by the molecules of the air, and blue light is scattered far more than red "
            "light, so the daytime sky looks blue.",
            "At sunset the light crosses much more air, the blue is scattered away, and the sky near the "
            "horizon turns orange and red.",
            "Rayleigh scattering grows with the fourth power of the frequency of the light.",
        ),
    ),
    (
        ("How does photosynthesis work?", "what do plants need to grow", "role of chlorophyll"),
        (
            "In photosynthesis, plants use the energy of sunlight to turn carbon dioxide and water into "
            "sugar, releasing oxygen.",
            "Chlorophyll is the green pigment in leaves that absorbs red and blue light for photosynthesis.",
            "Most plants need light, water, carbon dioxide and mineral nutrients such as nitrogen from the "
            "soil in order to grow.",
            "Cacti store water in thick stems and open their pores at night to lose less water.",
        ),
    ),
    (
        ("What is the tallest mountain in the world?", "Mount Everest height", "climbing Everest"),
        (
            "Mount Everest, on the border of Nepal and China, rises 8,849 metres above sea level, the "
            "highest point on Earth.",
            "Edmund Hillary and Tenzing Norgay were the first climbers known to reach the summit of Everest, "
            "in May 1953.",
            "Climbers on Everest usually carry bottled oxygen because the air near the top holds about a "
            "third of the oxygen at sea level.",
        ),
    ),
    (
        ("Who built the pyramids of Giza?", "ancient Egypt pyramids", "how old are the pyramids"),
        (
            "The pyramids of Giza were built as tombs for the pharaohs Khufu, Khafre and Menkaure more "
            "than 4,500 years ago.",
            "The Great Pyramid was the tallest structure made by people for almost four thousand years.",
            "Ancient Egyptian workers moved the limestone blocks on sledges and ramps; they were paid "
            "labourers, not slaves.",
        ),
    ),
    (
        ("When did the Second World War end?", "end of World War II", "what happened in 1945"),
        (
            "The Second World War ended in Europe on 8 May 1945 and in Asia on 2 September 1945, when "
            "Japan formally surrendered.",
            "In 1945 the United Nations was founded, and atomic bombs were dropped on Hiroshima and Nagasaki.",
            "The war in Europe began in September 1939 with the German invasion of Poland.",
        ),
    ),
    (
        ("How does the heart pump blood?", "human heart chambers", "what is blood pressure"),
        (
            "The heart has four chambers: two atria receive blood and two ventricles pump it out to the "
            "lungs and to the rest of the body.",
            "Blood pressure is the force of the blood against the walls of the arteries, measured when the "
            "heart beats and when it rests.",
            "An adult heart beats about sixty to one hundred times a minute at rest.",
            "Valves between the chambers of the heart stop the blood from flowing backwards.",
        ),
    ),
    (
        ("How much sleep do adults need?", "tips for sleeping better", "why do we dream"),
        (
            "Most adults need seven to nine hours of sleep a night to stay healthy and alert.",
            "Going to bed at the same time every night and avoiding screens before sleep can improve the "
            "quality of your sleep.",
            "Most vivid dreams happen during REM sleep, when the brain is almost as active as when awake.",
        ),
    ),
    (
        ("What is a vaccine?", "how do vaccines work", "immune system antibodies"),
        (
            "A vaccine trains the immune system to recognise a germ by showing it a harmless piece or a "
            "weakened form of that germ.",
            "Antibodies are proteins made by white blood cells that bind to viruses and bacteria and mark "
            "them for destruction.",
            "Edward Jenner developed the first vaccine, against smallpox, in 1796.",
        ),
    ),
    (
        ("How do I bake bread at home?", "bread recipe with yeast", "why does dough rise"),
        (
            "To bake a simple loaf, mix flour, water, salt and yeast, knead the dough, let it rise for an "
            "hour, shape it and bake it in a hot oven.",
            "Dough rises because yeast eats the sugars in the flour and releases bubbles of carbon dioxide "
            "that are trapped by the gluten.",
            "Sourdough bread is leavened with a starter of wild yeast and lactic acid bacteria instead of "
            "baker's yeast.",
        ),
    ),
    (
        ("How long should I boil an egg?", "soft boiled egg time", "cooking eggs"),
        (
            "A soft-boiled egg takes about six minutes in boiling water; a hard-boiled egg about ten.",
            "Eggs can be fried, scrambled, poached, boiled or baked, and they set as their proteins heat up.",
            "Putting boiled eggs in cold water right away stops them cooking and makes them easier to peel.",
        ),
    ),
    (
        ("What is the origin of coffee?", "how is coffee made", "caffeine effects"),
        (
            "Coffee comes from the roasted seeds of the Coffea plant, which first grew in Ethiopia.",
            "Coffee beans are picked, dried, roasted and ground, and hot water extracts their flavour.",
            "Caffeine blocks adenosine receptors in the brain, which makes people feel more awake.",
            "Brazil produces more coffee than any other country.",
        ),
    ),
    (
        ("Rules of football", "how long is a soccer match", "what is offside"),
        (
            "A football match is played by two teams of eleven players over two halves of forty-five minutes.",
            "A player is offside if they are nearer to the opponents' goal line than both the ball and the "
            "second-last defender when the ball is played to them.",
            "The FIFA World Cup is held every four years; Brazil has won it five times.",
        ),
    ),
    (
        ("How long is a marathon?", "marathon training plan", "history of the marathon"),
        (
            "A marathon is a running race of 42.195 kilometres, or about 26.2 miles.",
            "Training for a first marathon usually takes four to six months of gradually longer runs.",
            "The race is named after the legend of a Greek messenger who ran from Marathon to Athens.",
        ),
    ),
    (
        ("Who has won the most tennis Grand Slams?", "tennis scoring system", "Wimbledon tournament"),
        (
            "Tennis is scored in points, games and sets; a game goes from love to fifteen, thirty, forty and game.",
            "Wimbledon, played on grass in London since 1877, is the oldest tennis tournament in the world.",
            "Novak Djokovic holds the record for the most Grand Slam singles titles among men.",
        ),
    ),
    (
        ("How does a computer CPU work?", "what is a processor", "CPU cores and clock speed"),
        (
            "A CPU fetches instructions from memory, decodes them and executes them, billions of times per second.",
            "A processor with several cores can run several programs or threads at the same time.",
            "The clock speed of a processor, measured in gigahertz, counts how many cycles it runs per second.",
        ),
    ),
    (
        ("What is machine learning?", "how do neural networks learn", "training data for AI"),
        (
            "Machine learning is a way of building programs that learn patterns from examples instead of "
            "following rules written by hand.",
            "A neural network learns by adjusting its weights with gradient descent to reduce its error on "
            "training examples.",
            "A model trained on too little data may memorise its examples and fail on new ones.",
        ),
    ),
    (
        ("How do I reverse a list in Python?", "python list methods", "sorting a list in Python"),
        (
            "In Python, my_list.reverse() reverses a list in place, and my_list[::-1] returns a reversed copy.",
            "Python lists have methods such as append, extend, insert, remove, pop and sort.",
            "sorted(items) returns a new sorted list, while items.sort() sorts the list in place.",
        ),
    ),
    (
        ("What is the difference between HTTP and HTTPS?", "how does TLS encryption work", "web security"),
        (
            "HTTPS is HTTP sent over an encrypted TLS connection, so others on the network cannot read or change it.",
            "TLS uses a certificate to prove the identity of a website and then agrees on keys to encrypt "
            "the connection.",
            "Browsers show a padlock next to the address when a page is loaded over HTTPS.",
        ),
    ),
    (
        ("How do I reset my password?", "forgot password email", "account login problems"),
        (
            "To reset your password, click 'Forgot password' on the sign-in page and follow the link we "
            "send to your email address.",
            "If you cannot sign in, check that caps lock is off and that you are using the email address "
            "of your account.",
            "A password reset link expires after 24 hours for your security.",
        ),
    ),
    (
        ("What is inflation?", "why do prices rise", "how do central banks fight inflation"),
        (
            "Inflation is the rate at which the general level of prices rises, so that money buys less over time.",
            "Central banks raise interest rates to slow borrowing and spending when inflation is too high.",
            "Prices can rise when demand grows faster than supply or when the cost of energy goes up.",
        ),
    ),
    (
        ("How does the stock market work?", "what is a share", "investing in index funds"),
        (
            "A share is a small piece of ownership in a company, and the stock market is where shares are "
            "bought and sold.",
            "An index fund buys all the shares of a market index, such as the S&P 500, to match its return "
            "at a low cost.",
            "Share prices move with what investors expect a company to earn in the future.",
        ),
    ),
    (
        ("How do I open a bank account?", "documents needed for a bank account", "savings account interest"),
        (
            "To open a bank account you usually need proof of identity, such as a passport, and proof of address.",
            "A savings account pays interest on the money you keep in it, usually a small percentage a year.",
            "Many banks let you open an account online in a few minutes.",
        ),
    ),
    (
        ("What is the capital of Japan?", "Tokyo facts", "largest cities in Asia"),
        (
            "Tokyo is the capital of Japan and, with its surrounding region, the largest metropolitan area "
            "in the world.",
            "Tokyo was called Edo until 1868, when the emperor moved there from Kyoto.",
            "Shanghai, Delhi and Jakarta are among the largest cities in Asia.",
        ),
    ),
    (
        ("What is the longest river in the world?", "the Nile river", "Amazon river facts"),
        (
            "The Nile, flowing north through eleven countries to the Mediterranean, is usually named the "
            "longest river in the world, at about 6,650 kilometres.",
            "The Amazon carries more water than any other river, about a fifth of all the fresh water that "
            "flows into the oceans.",
            "The Nile's two main branches, the White Nile and the Blue Nile, meet at Khartoum in Sudan.",
        ),
    ),
    (
        ("Where is the Sahara desert?", "largest desert", "how hot is the desert"),
        (
            "The Sahara covers most of North Africa and is the largest hot desert in the world.",
            "Antarctica is the largest desert of all, since it receives very little precipitation.",
            "Desert temperatures can exceed 45 degrees Celsius by day and fall near freezing at night.",
        ),
    ),
    (
        ("How do I get a passport?", "passport renewal", "travel visa requirements"),
        (
            "To get a passport, fill in the application form, add a recent photo and proof of citizenship, "
            "and pay the fee.",
            "Renew your passport several months before it expires, since some countries require six months "
            "of validity.",
            "A visa is permission from another country to enter it; some countries do not require one for "
            "short visits.",
        ),
    ),
    (
        ("Cheap ways to travel in Europe", "train travel across Europe", "budget airlines"),
        (
            "Rail passes let travellers take most trains across many European countries for one price.",
            "Budget airlines offer low fares but charge extra for checked bags and seat choices.",
            "Travelling outside the summer season makes hotels and flights in Europe much cheaper.",
        ),
    ),
    (
        ("How far is the Moon from Earth?", "moon landing 1969", "phases of the moon"),
        (
            "The Moon orbits the Earth at an average distance of about 384,400 kilometres.",
            "Neil Armstrong and Buzz Aldrin landed on the Moon with Apollo 11 on 20 July 1969.",
            "The phases of the Moon, from new moon to full moon, repeat about every 29.5 days.",
        ),
    ),
    (
        ("What is a black hole?", "event horizon", "how are black holes formed"),
        (
            "A black hole is a region of space where gravity is so strong that nothing, not even light, can escape.",
            "The event horizon is the boundary around a black hole beyond which nothing can return.",
            "Black holes form when very massive stars collapse at the end of their lives.",
        ),
    ),
    (
        ("How many planets are in the solar system?", "largest planet", "why is Pluto not a planet"),
        (
            "The solar system has eight planets: Mercury, Venus, Earth, Mars, Jupiter, Saturn, Uranus and Neptune.",
            "Jupiter is the largest planet, more than eleven times as wide as the Earth.",
            "In 2006 astronomers reclassified Pluto as a dwarf planet because it has not cleared its orbit "
            "of other objects.",
        ),
    ),
    (
        ("What causes rain?", "how clouds form", "weather forecast tomorrow"),
        (
            "Rain forms when water vapour in clouds condenses into droplets that grow heavy enough to fall.",
            "Clouds form when moist air rises, cools and its water vapour condenses on tiny particles of dust.",
            "Tomorrow will be cloudy in the morning with showers in the afternoon and a high of 14 degrees.",
        ),
    ),
    (
        ("What causes climate change?", "greenhouse effect", "effects of global warming"),
        (
            "Burning coal, oil and gas releases carbon dioxide, which traps heat in the atmosphere and warms "
            "the planet.",
            "The greenhouse effect keeps the Earth warm: gases in the air absorb heat radiated by the surface.",
            "Global warming raises sea levels, melts glaciers and makes heatwaves more frequent.",
        ),
    ),
    (
        ("How fast can a cheetah run?", "fastest land animal", "big cats of Africa"),
        (
            "The cheetah is the fastest land animal, reaching about 100 kilometres per hour in short sprints.",
            "Lions, leopards and cheetahs are the big cats of the African savanna.",
            "A cheetah's long tail helps it steer and balance when it turns at speed.",
        ),
    ),
    (
        ("Are whales fish?", "largest animal on earth", "how do whales breathe"),
        (
            "Whales are mammals, not fish: they breathe air, are warm-blooded and feed their young on milk.",
            "The blue whale is the largest animal known to have lived, up to 30 metres long.",
            "Whales breathe through blowholes on the top of their heads when they come to the surface.",
        ),
    ),
    (
        ("What do owls eat?", "nocturnal birds", "why do owls hoot"),
        (
            "Owls hunt mice, voles, insects and small birds, and swallow small prey whole.",
            "Owls are nocturnal birds of prey with large eyes and feathers that let them fly silently.",
            "Owls hoot to mark their territory and to call to their mates.",
        ),
    ),
    (
        ("How long do dogs live?", "dog breeds for families", "how to train a puppy"),
        (
            "Most dogs live ten to thirteen years; small breeds tend to live longer than large ones.",
            "Labradors and golden retrievers are popular family dogs because they are gentle and easy to train.",
            "Train a puppy with short sessions, rewards for good behaviour and a lot of patience.",
        ),
    ),
    (
        ("Who painted the Mona Lisa?", "Leonardo da Vinci paintings", "the Louvre museum"),
        (
            "Leonardo da Vinci painted the Mona Lisa in the early sixteenth century; it hangs in the Louvre in Paris.",
            "The Louvre in Paris is the most visited art museum in the world.",
            "Leonardo's other famous works include The Last Supper and the drawing of the Vitruvian Man.",
        ),
    ),
    (
        ("How many strings does a guitar have?", "learning to play guitar", "guitar chords for beginners"),
        (
            "A standard guitar has six strings, tuned E, A, D, G, B and E from the lowest to the highest.",
            "Beginners on the guitar usually start with a few open chords such as G, C, D and E minor.",
            "Practising for fifteen minutes every day helps more than one long session a week.",
        ),
    ),
    (
        ("Who composed the Four Seasons?", "baroque music composers", "famous classical symphonies"),
        (
            "Antonio Vivaldi composed The Four Seasons, a set of four violin concertos, around 1720.",
            "Bach, Handel and Vivaldi were leading composers of the baroque period.",
            "Beethoven's Fifth and Ninth Symphonies are among the most performed works of classical music.",
        ),
    ),
    (
        ("How do I change a flat tyre?", "car maintenance tips", "tyre pressure"),
        (
            "To change a flat tyre, loosen the nuts, raise the car with the jack, swap the wheel and "
            "tighten the nuts in a star pattern.",
            "Check your tyre pressure once a month; the right value is printed inside the driver's door.",
            "Changing the engine oil regularly keeps a car's engine running smoothly.",
        ),
    ),
    (
        ("How do electric cars work?", "electric car battery range", "charging an electric vehicle"),
        (
            "An electric car runs on a battery that powers an electric motor, with no petrol engine.",
            "Most new electric cars can drive 300 to 500 kilometres on one charge.",
            "A fast charger can fill an electric car's battery to 80 percent in about half an hour.",
        ),
    ),
    (
        ("What is a contract?", "signing a rental lease", "tenant rights"),
        (
            "A contract is an agreement between parties that the law will enforce.",
            "Before signing a lease, read how long it runs, what the deposit is and who pays for repairs.",
            "Tenants have the right to a safe home and to notice before the landlord enters.",
        ),
    ),
    (
        ("How do I write a good CV?", "job interview tips", "cover letter example"),
        (
            "A good CV is short, lists your most relevant experience first and shows results, not only duties.",
            "Before a job interview, research the company and prepare examples of problems you solved.",
            "A cover letter explains in a few paragraphs why you want this job and why you fit it.",
        ),
    ),
    (
        ("Benefits of drinking water", "how much water should I drink", "dehydration symptoms"),
        (
            "Water keeps the body at the right temperature, carries nutrients and helps the kidneys remove waste.",
            "Many adults need around two litres of fluids a day, more in hot weather or during exercise.",
            "Thirst, dark urine, headaches and tiredness are signs of dehydration.",
        ),
    ),
    (
        ("How do plants grow from seeds?", "planting tomatoes", "gardening for beginners"),
        (
            "A seed germinates when it takes up water, and its root grows down while its shoot grows up "
            "towards the light.",
            "Plant tomatoes in a sunny spot after the last frost and water them deeply at the base.",
            "Beginner gardeners do well with easy plants such as lettuce, radishes, beans and herbs.",
        ),
    ),
)

SHORT: tuple[str, ...] = (
    "hello",
    "thanks!",
    "ok",
    "yes",
    "no idea",
    "see you tomorrow",
    "good morning everyone",
    "lol",
    "click here",
    "page 2 of 7",
    "12345",
    "N/A",
    "Copyright 2024. All rights reserved.",
    "Subscribe to our newsletter",
    "that sounds great",
    "what?",
)
