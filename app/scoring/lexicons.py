"""Word lists and phrase patterns behind the stylistic features (ours, deliberately small, English only).
(Over 400 lines on purpose: it is data, one list per strategy; splitting it would scatter the lists, not simplify.)

Politeness follows the request strategies of Brown & Levinson's politeness theory as operationalised for
requests (gratitude, deference, greeting, apology, please by position, indirect could/would vs can/will,
hedges, first-person plural, direct questions, factuality, second-person starts, sentiment). Warmth follows the
empathy literature: emotional reactions, validation, understanding, care/reassurance, encouragement, personal
address. The cold register is templated and impersonal language, not shortness.

All patterns run on normalised, lowercased text (see app/scoring/normalize.py): apostrophes are straight.
"""

from __future__ import annotations

import re


def words(text: str) -> frozenset[str]:
    return frozenset(text.split())


def phrases(*items: str) -> re.Pattern[str]:
    return re.compile(r"\b(?:" + "|".join(items) + r")\b")


SLANG = words("""
lol lmao lmfao rofl omg omfg wtf idk idc tbh btw imo imho ngl fr rn bc cuz coz cos gonna wanna
gotta kinda sorta dunno ya yah yeah yep yup nah nope u ur r k kk ok okay yo dude bro bruh guys
y'all yall thx thnx ty pls plz lemme gimme ain't aint wassup sup hey heya hiya haha hahaha hehe
lil tho thru nvm smh af bday asap fyi jk xoxo meh ugh ooh oops whoa wow yay cool awesome stuff
folks mate cheers tons gotcha totally super hiii soooo sooo omw ikr istg wth ffs bs pissed
""")
# Register words only: politeness markers (please, kindly, regret, appreciate) are features of their own.
FORMAL_WORDS = words("""
however therefore furthermore moreover nevertheless consequently accordingly regarding hereby
herein thereof whereby pursuant notwithstanding additionally subsequently respectively
approximately therein henceforth prior whom thus hence shall sincerely regards dear
madam sir request requested inform informed ensure assist assistance require required inquiry
enquiry acknowledge convenience purchase receive received provide provided indicate indicated obtain
commence concerning sufficient demonstrate facilitate utilize utilise regard whereas upon advise advised
constitute regarding aforementioned outlined endeavour endeavor remit remittance cordially correspondence
""")
NEGATORS = re.compile(r"\b(?:not|no|never|nothing|hardly|neither|nor|without|\w+n't|cannot)\b")
GREETING = re.compile(
    r"^(?:hi|hello|hey|heya|hiya|hiii+|dear|good (?:morning|afternoon|evening)|greetings|howdy|morning|evening)\b"
)
PLEASE = words("please pls plz kindly")
GRATITUDE = phrases(
    r"thanks?",
    "thank you",
    "thx",
    "ty",
    "tysm",
    r"appreciated?",
    "i appreciate",
    "grateful",
    "cheers",
    "much obliged",
)
THANKS_SARCASM = phrases("thanks for nothing", "no thanks to you", "thanks a lot for wasting")
APOLOGY = phrases(r"sorry", r"apologi[sz]e[sd]?", "apologies", "i regret", "we regret", "my bad", "excuse me", "pardon")
DEFERENCE = phrases(
    "would you mind",
    "if you don't mind",
    "if it's not too much",
    "if you have a (?:chance|moment|minute|second)",
    "when you (?:get|have) a (?:chance|moment|minute|sec|second)",
    "i was wondering",
    "i wonder if",
    "i wonder whether",
    "would it be possible",
    "might i",
    "may i",
    "sorry to bother",
    "sorry to trouble",
    "sorry for the trouble",
    "no rush",
    "no pressure",
    "at your convenience",
    "whenever (?:you can|suits|works)",
    "great question",
    "good question",
    "good point",
    "fair point",
    "you're right",
    "you are right",
    "you're absolutely right",
    "your expertise",
    "if that's ok",
    "if that's okay",
    "if possible",
    "feel free",
    "totally understand if",
    "no worries if not",
    "i'd be grateful",
    "i would be grateful",
    "would be much appreciated",
    "thanks in advance",
    "thank you in advance",
)
INDIRECT = phrases("could you", "would you", "could we", "would it be", "is it possible", "do you think you could")
INDICATIVE = phrases("can you", "will you", "can u", "will u", "can't you", "won't you")
SUBJUNCTIVE = words("could would might")
HEDGE = phrases(
    "perhaps",
    "maybe",
    "might",
    "possibly",
    "probably",
    "i think",
    "i believe",
    "i guess",
    "i suppose",
    "it seems",
    "seems",
    "somewhat",
    "a bit",
    "a little",
    "kind of",
    "sort of",
    "kinda",
    "apparently",
    "likely",
    "i feel like",
    "not sure",
    "if i'm not mistaken",
    "unless i'm",
)
FACTUAL = phrases(
    "actually", "in fact", "obviously", "clearly", "of course", "honestly", "seriously", "the fact is", "the point is"
)
DIRECT_QUESTION = re.compile(r"^(?:why|what|how|where|when|who|which)\b[^.!?]*\?")
DIRECT_START = words("so then and but now look listen")
SECOND = words("you your yours yourself yourselves you're you've you'll you'd u ur")
FIRST_SINGULAR = words("i me my mine myself i'm i've i'll i'd")
FIRST_PLURAL = words("we us our ours ourselves we're we've we'll we'd let's")
OBLIGATION = phrases("you need to", "you must", "you have to", "you should", "you better", "you'd better", "u need to")
RUDE = phrases(
    "stupid",
    "idiot",
    "idiots",
    "idiotic",
    "dumb",
    "hell",
    "damn",
    "wtf",
    "crap",
    r"shit\w*",
    r"f+u+c+k\w*",
    "ffs",
    "bs",
    "ridiculous",
    "useless",
    "pathetic",
    "nonsense",
    "shut up",
    "moron",
    "garbage",
    "incompetent",
    "joke",
    "clown",
    "clueless",
    "lazy",
    "get a clue",
    "wasting my time",
    "waste of time",
    "for the last time",
    "how hard is it",
    "do your job",
    "i don't care",
    "who cares",
    "whatever",
    "pissed",
    "screw",
)
NEGATIVE = phrases(
    "terrible",
    "awful",
    "worst",
    "hate",
    r"sucks?",
    "annoying",
    "annoyed",
    "unacceptable",
    "disappointed",
    "disappointing",
    "horrible",
    "bad",
    "wrong",
    "broken",
    "fail(?:ed|s|ure)?",
    "problem",
    "mess",
    "angry",
    "furious",
    "fed up",
    "sick of",
    "tired of",
    "disgusting",
    "rubbish",
    "poor",
    "complain(?:t|ing)?",
    "excuse",
)
POSITIVE = phrases(
    "happy",
    "glad",
    "love",
    "lovely",
    "great",
    "wonderful",
    "awesome",
    "amazing",
    "excited",
    "exciting",
    "delighted",
    "fantastic",
    "enjoy(?:ed)?",
    "welcome",
    "pleasure",
    "congrats",
    "congratulations",
    "yay",
    "thrilled",
    "excellent",
    "perfect",
    "beautiful",
    "sweet",
    "fun",
    "nice",
    "kind",
    "helpful",
    "brilliant",
    "good",
    "best",
)
EMOTIONAL_REACTION = phrases(
    "sorry to hear",
    "so sorry",
    "really sorry",
    "i'm sorry (?:that|you|this|about)",
    "that sounds (?:\\w+ )?(?:hard|rough|awful|exhausting|frustrating|difficult|tough|scary|stressful|horrible|"
    "terrible|painful|lonely|overwhelming|upsetting|miserable|heartbreaking|maddening)",
    "sounds (?:really |so )?(?:hard|rough|awful|exhausting|frustrating|difficult|tough|scary|stressful)",
    "oh no",
    "how awful",
    "how frustrating",
    "what a pain",
    "i can imagine",
    "i can only imagine",
    "that must (?:be|have been)",
    "must be (?:so |really )?(?:hard|frustrating|exhausting|stressful|difficult|tough|scary|worrying|annoying)",
    "my heart",
    "ugh,? that's",
    "that's (?:so |really )?(?:rough|tough|hard|awful|frustrating)",
)
VALIDATION = phrases(
    "makes (?:total |complete )?sense",
    "completely understandable",
    "totally understandable",
    "understandable",
    "you're not alone",
    "you are not alone",
    "it's (?:okay|ok|normal|natural|fine) to",
    "valid",
    "anyone would",
    "of course you",
    "no wonder",
    "you did the right thing",
    "you did nothing wrong",
    "not your fault",
    "fair enough to feel",
    "right to be",
    "totally fair",
    "that's fair",
    "you(?:'re| are) not (?:useless|alone|a failure|lazy|weak|broken|overreacting|dramatic|crazy|a burden)",
    "(?:it's|that's|this is|it is) not (?:a personal failing|your fault|laziness|weakness|a failure|a verdict)",
    "you(?:'re| are) allowed to",
    "being human",
    "in your (?:position|shoes)",
    "it's a lot",
    "that's a lot",
    "so hard",
)
DISMISSIVE = phrases(
    "that's on you",
    "join the club",
    "nobody owes you",
    "get over it",
    "grow up",
    "man up",
    "suck it up",
    "deal with it",
    "move on",
    "stop (?:posting|whining|complaining|moaning|crying|refreshing|writing|asking)",
    "nobody (?:is gonna|is going to|cares|asked)",
    "not my problem",
    "your problem",
    "read the (?:faq|docs|manual|rules|thread|wiki)",
    "google it",
    "just google",
    "as i (?:already )?said",
    "did you even",
    "big-girl",
    "boo hoo",
    "stop the presses",
    "cry me a river",
    "welcome to (?:adulthood|the real world)",
    "first world problem",
    "cool story",
    "not our problem",
    "figure it out",
    "learn to",
    "we get it",
    "you people",
    "no offense but",
)
UNDERSTANDING = phrases(
    "i understand",
    "i get it",
    "i hear you",
    "i know how",
    "i know what it's like",
    "i've been there",
    "been there",
    "i totally get",
    "totally get",
    "i feel you",
    "same here",
    "me too",
)
CARE = phrases(
    "don't worry",
    "no worries",
    "rest assured",
    "we'll (?:sort|get|fix|make)",
    "i'll (?:sort|get|fix|make|look)",
    "you've got this",
    "you got this",
    "take care",
    "hang in there",
    "i'm here",
    "we're here",
    "here for you",
    "here to help",
    "happy to help",
    "glad to help",
    "hope (?:this|that|it|you|things|everything)",
    "hoping",
    "feel better",
    "be kind to yourself",
    "take your time",
    "look after yourself",
    "proud of you",
    "well done",
    "great job",
    "good luck",
    "fingers crossed",
    "best of luck",
    "thinking of you",
    "sending",
    "hugs",
    "you deserve",
    "i promise",
    "gentle with",
    "look after you",
    "proud of",
    "glad you (?:asked|reached|posted|shared|wrote)",
    "thank you for (?:sharing|telling|trusting|being)",
    "thanks for (?:sharing|telling|trusting)",
    "let me know how",
    "keep us posted",
    "reach out",
    "any time",
    "anytime",
    "how are you",
    "how did it go",
    "how are you (?:holding up|doing|feeling)",
    "how's it going",
)
FEELINGS = phrases(
    r"feel(?:s|ing|ings)?",
    "felt",
    "stressed",
    "stress",
    "upset",
    "worried",
    "worry",
    "scared",
    "afraid",
    "anxious",
    "anxiety",
    "overwhelmed",
    "lonely",
    "exhausted",
    "frustrated",
    "frustrating",
    "hurt",
    "sad",
    "heartbroken",
    "nervous",
    "embarrassed",
    "relieved",
)
ADDRESS_TERMS = words("mate friend hun hon buddy pal love dear folks guys everyone team sweetheart sweetie lovely")
WARM_EMOJI = re.compile(
    "[\u2764\U0001f49b-\U0001f49f\U0001f496\U0001f495\U0001f497\U0001f970\U0001f60a\U0001f917\U0001f64f\U0001f338\U0001fac2]"
)
TEMPLATED = phrases(
    "status",
    "ticket (?:closed|resolved|updated)",
    "request (?:denied|rejected|received|closed)",
    "no further action",
    "as per",
    "per policy",
    "refer to",
    "see (?:the )?(?:faq|docs|documentation|manual|attached)",
    "n/a",
    "ack",
    "noted",
    "resolved",
    "closed",
    "denied",
    "rejected",
    "error",
    "code",
    "automated",
    "do not reply",
    "this is an automated",
    "invalid",
    "not permitted",
    "not supported",
    "will not be",
    "cannot be",
    "is required",
    "are required",
    "must be",
    "pending",
    "processed",
    "escalated",
    "eta",
    "duplicate",
    "wontfix",
    "policy",
)
PASSIVE = re.compile(r"\b(?:is|are|was|were|be|been|being|has been|have been)\s+(?:\w+ly\s+)?\w+(?:ed|en)\b")
IMPERATIVE_VERBS = words("""
send give tell fix stop do make check go look read update remove add use try provide submit
enter click call contact wait restart retry reset follow see note ensure let get put take bring
keep open close confirm fill select choose install delete return refer visit sign log reply
respond allow expect answer explain show quit change learn google
""")
FUNCTION_PRONOUNS = FIRST_SINGULAR | FIRST_PLURAL | SECOND | words("he she they it this that him her them")
LATINATE = re.compile(r"(tion|sion|ment|ance|ence|ity|ive|ous|ial|ible|able|ize|ise|ate)$")
STOPWORDS = words("""
the a an of to in on for and or but is are was were be been being it this that with as at by
from if then so not no do does did have has had will would can could should
""")
