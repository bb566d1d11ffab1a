"""Input screening: find and redact personal data and secrets, flag prompt injection.

Pure Python, no Django: the logging filter, the prompt renderer, step records
shown to viewers and run tainting all call it. Patterns compile once, at import.
`find_pii` returns non-overlapping findings (where detectors overlap the more
specific wins: secret > iban > card > email > phone); `redact*` return copies
and never mutate; `injection_signals` returns signal names in `SIGNALS` order.
The signals are heuristics: they raise a flag for a human or a policy, they
prove nothing.
"""

from __future__ import annotations

import base64
import binascii
import html
import re
import unicodedata
from collections.abc import Callable, Iterable, Iterator
from dataclasses import dataclass
from functools import cache, partial
from typing import Any, cast

import phonenumbers
from stdnum import iban, luhn

# Numbers written without a country code are read as this region first; the
# other regions are tried only for shapes that carry a national trunk prefix
# ("0…") or sit right after a phone word, so plain numbers stay plain.
DEFAULT_REGION = "US"
OTHER_REGIONS = (
    *("GB", "DE", "FR", "IT", "ES", "NL", "BE", "CH", "AT", "IE", "PT", "SE", "NO", "DK"),
    *("FI", "PL", "AU", "NZ", "IN", "JP", "BR", "MX", "ZA", "SG", "CA"),
)

# Dict order is the priority used to settle overlapping findings.
PLACEHOLDERS = {kind: f"[{kind.upper()}]" for kind in ("secret", "iban", "card", "email", "phone")}
REDACTED = "[REDACTED]"


# --- patterns, compiled once --------------------------------------------------

_SECRET = re.compile(
    r"-----BEGIN[A-Z ]*PRIVATE KEY(?: BLOCK)?-----"
    r"(?:[\s\S]*?-----END[A-Z ]*PRIVATE KEY(?: BLOCK)?-----|[A-Za-z0-9+/=\s]*)"
    r"|(?<![\w-])(?:sk-(?:ant-)?[\w-]{20,}|(?:sk|rk)_(?:live|test)_[A-Za-z0-9]{16,}"
    r"|(?:AKIA|ASIA)[A-Z0-9]{16}|gh[pousr]_[A-Za-z0-9]{30,}|github_pat_\w{30,}"
    r"|xox[baoprs]-[A-Za-z0-9-]{10,}|AIza[\w-]{35}|eyJ[\w-]{8,}\.eyJ[\w-]{8,}\.[\w-]{8,})(?![\w-])"
    r"|(?i:\bbearer\s+)([\w.~+/-]{20,}=*)"
    # key = value, the value only: aws_secret_access_key=…, "api_key": "…", DB_PASSWORD=….
    # The value ends at a quote, space or separator, at "&next=" and at a closing ")".
    r"|(?i:\b[\w.-]{0,40}(?:api[_-]?key|apikey|secret|token|passw(?:or)?d|pwd)[\w.-]{0,40}"
    r"[\"']?\s*[:=]\s*[\"']?)((?:[^\s\"',;&<>)]|&(?!\w+=)|\)(?=[^\s\"',;<>)]))+)"
)
_EMAIL = re.compile(
    r"(?<![\w.%+-])[\w%+-][\w%+'-]*(?:\.[\w%+'-]+)*@(?:[^\W_](?:[\w-]{0,61}[^\W_])?\.)+[^\W\d_]{2,}(?![\w-])"
    r"|(?<![\w.+-])[\w.+-]{1,64}\s?[\[(]\s?at\s?[\])]\s?[\w-]{1,63}(?:\s?[\[(]\s?dot\s?[\])]\s?[\w-]{1,63})+",  # a [at] b [dot] c
    re.I,
)
_IBAN_CANDIDATE = re.compile(r"(?<![A-Za-z0-9])[A-Za-z]{2}\d{2}(?:[ -]?[A-Za-z0-9]){11,34}")
# Printed cards group by four (Amex and Diners 4-6-5 / 4-6-4); an id such as
# "112-4567890-1234567" may pass Luhn by chance but not this shape. "+4915…" is a phone.
_CARD_CANDIDATE = re.compile(
    r"(?<![\d+])(?:\d{13,19}|\d{4}(?:[ -]\d{4}){2,3}(?:[ -]\d{1,4})?|\d{4}[ -]\d{6}[ -]\d{4,5})(?!\d)"
)
_SPACE_DASH_TOKEN = re.compile(r"[^ -]+")
_SEVEN_DIGITS = re.compile(r"\d(?:\D{0,3}\d){6}")
# National formats: digit groups with mandatory separators (so a digit run has one
# way to split, no backtracking blow-up), or one unbroken run behind a trunk "0".
_PHONE_CANDIDATE = re.compile(
    r"(?<![\w+./-])(?:\(?\d{2,6}\)?(?:[ ./-]{1,3}\d{2,10}){1,5}|0\d{8,12})(?!\d)"
)
_PHONE_TOKEN = re.compile(r"[^ .()/-]+")
_DATE_LIKE = re.compile(r"\(?\d{1,4}[./-]\d{1,2}[./-]\d{1,4}\b")
_PHONE_WORDS = re.compile(
    r"\b(?:phone|tel|tél|telephone|téléphone|telefon|teléfono|telefono|telefone|call|calling|"
    r"mobile|mobil|mob|cell|tlf|cellphone|handy|móvil|movil|celular|cellulare|portable|fax|whatsapp|sms|"
    r"text|ring|reach|dial|hotline|landline|contact|ext|rufen|anrufen|appel\w*|llam\w*|chiam\w*|ligue|bel)\b|\b[mtpofw]\s?[:.]"
)
_ID_WORDS = re.compile(
    r"\b(?:order|invoice|inv|ticket|case|ref|reference|po|sku|id|account|acct|tracking|serial|"
    r"item|part|batch|lot|isbn|vat|tax|routing|swift|bic|policy|claim|booking|shipment|awb|"
    r"imei|meid|iccid|imsi|gtin|ean|upc|duns)\b|#"
)

# Normalisation tables. Unicode "tag" characters spell ASCII invisibly (ASCII smuggling).
_TAG_TO_ASCII = {cp: cp - 0xE0000 for cp in range(0xE0020, 0xE007F)}
_INVISIBLE = re.compile(
    "[\u00ad\u180e\u200b-\u200f\u202a-\u202e\u2060-\u2064\u2066-\u2069\ufeff\U000e0000-\U000e007f]"
)
# Raw-text evidence of hiding. A leading BOM and a joiner inside emoji are normal.
_INVISIBLE_MARKUP = re.compile(
    "(?<=[\\s\\S])[\u200b\u2060-\u2064\ufeff\u180e]|[\u202a-\u202e\u2066-\u2069\U000e0000-\U000e007f]"
    "|(?<=[A-Za-z])[\u200c\u200d](?=[A-Za-z])"
)
_CONFUSABLES = str.maketrans("аеёіјкорсуѕԁхαεικορτυνχɡ", "aeeijkopcysdxaeikoptuvxg")
_WORD = re.compile(r"\w+")


def _rx(*phrases: str, flags: int = 0) -> re.Pattern[str]:
    """One regex from readable phrases: a space stands for any run of spaces or
    punctuation, so "ignore, *all* previous" matches like "ignore all previous"."""
    joined = "|".join(f"(?<![a-z])(?:{p})" for p in phrases)
    return re.compile(joined.replace(" ", r"[\W_]+"), flags)


_QUAL = r"(?:all|any|every|previous|prior|above|earlier|preceding|former|original|initial|existing|old|your|system|safety|developer|these|those|other)"
_NOUN = r"(?:instructions?|prompts?|directives?|directions|guidelines|guardrails|rules|programming|commands|system message|constraints|restrictions|training|context)"
_FOREIGN_NOUN = r"(?:instrucciones|consignes|anweisungen|instruktionen|vorgaben|istruzioni|instruções|instrucoes|instructies|reglas|règles|regole|regras|regeln)"
_AI = r"(?:ai|llms?|(?:large )?language models?|ai (?:assistant|agent|model|system)s?|chatbots?|gpt|chatgpt|copilot|(?:autonomous|automated) agents?|bots?)"
_SENSITIVE = (
    r"(?:data|conversation|chat|history|credentials?|passwords?|api keys?|keys|tokens?|secrets?|context|"
    r"prompt|system prompt|instructions|everything|customer (?:list|data|records|database|details)|"
    r"contact list|contacts|database|inbox|session|cookies|user(?: s)? data|personal (?:data|information|details)|"
    r"pii|environment variables|env vars|all (?:emails|messages|files|records|leads|documents|notes))"
)
_EXT = r"(?:com|org|net|io|co|ai|dev|app|us|uk|de|fr|eu|exe|py|sh|js|ts|txt|pdf|csv|docx?|xlsx?|pptx?|html?|json|xml|zip|msi|dmg|bat|cmd|ps1|png|jpe?g|gif|log|ya?ml|cfg|ini|md|php|rb|go|jar|apk|iso|tar|gz)"

_SIGNAL_PATTERNS: dict[str, re.Pattern[str]] = {
    "ignore_instructions": _rx(
        r"(?:ignore|disregard|forget|override|overrule|bypass|skip|drop|discard|abandon|neglect|set aside|throw out"
        rf"|stop following|do not follow|don t follow|dont follow|no longer follow) (?:\w+ ){{0,3}}?{_QUAL} (?:\w+ ){{0,2}}?"
        rf"{_NOUN}\b(?! (?:regarding|about|concerning|re|on|for (?:the|this|that|my|our) (?:order|invoice|shipment|delivery|payment|account|booking))\b)",
        r"forget (?:everything|all|anything|what) (?:\w+ ){0,3}?(?:you (?:were|have been|ve been) told|above|i said before)",
        r"(?:disregard|ignore) (?:everything|anything|all|what) (?:\w+ ){0,2}?you (?:were|have been|ve been) told",
        r"(?:instructions|prompts?|directives|rules) you (?:were|have been|ve been) given (?:\w+ ){0,3}?(?:outdated|obsolete|void|invalid|cancel+ed|wrong|fake|superseded|revoked|no longer)",
        rf"ignore (?:\w+ ){{0,4}}?{_FOREIGN_NOUN}",
        rf"(?:ignor(?:a|ez|er|ieren|iere|ate|ar|ad|en)|olvida|olvide|oublie|oubliez|vergiss|vergessen sie|dimentica|esqueça|esqueca|vergeet|negeer) (?:\w+ ){{0,4}}?(?:instructions|{_FOREIGN_NOUN})",
        r"(?:игнорируй|забудь)\w* (?:\w+ ){0,3}?(?:инструкци|указани|правил)\w*",
        r"(?:忽略|无视|忽视|無視|忘记|忘記)[^。.!！]{0,12}(?:指令|指示|说明|提示|规则|規則|命令)",
        r"(?:以前|これまで|上記|前)の(?:指示|命令|ルール|プロンプト)を(?:すべて|全て)?無視",
    ),
    "role_override": _rx(
        r"you (?:are|re) now (?:\w+ ){0,3}?(?:dan|ai|assistant|bot|chatbot|model|persona|character|unrestricted|unfiltered|uncensored|jailbroken|evil|free from|no longer|in \w+ mode)\b",
        r"from now on,? (?:act as|ignore|you (?:are|will|must|shall|should) (?:act|behave|pretend|ignore|obey|be (?:an? )?(?:ai|assistant|bot|model|dan)\b))",
        r"(?:act|behave|respond|answer|reply|roleplay|role play|pose) as (?:if you (?:are|were) )?(?:an? |the )?(?:\w+ ){0,3}?(?:unrestricted|unfiltered|uncensored|jailbroken|evil|rogue|malicious|dan|hacker)\b",
        r"(?:act|behave|respond) as (?:an? )?(?:ai|assistant|model|chatbot|llm) (?:\w+ ){0,2}?(?:without|with no|that has no|free of) (?:any )?(?:restrictions|limits|limitations|filters|rules|guidelines|ethics|censorship)",
        r"(?:pretend|imagine|suppose) (?:that )?(?:you (?:are|re)|to be|you have become) (?:an? |the )?(?:\w+ ){0,2}?(?:ai|assistant|model|chatbot|bot|llm|dan|version of yourself)\b",
        r"(?:god|jailbreak|jailbroken|dan|unrestricted|unfiltered|uncensored|sudo|evil) mode",
        r"developer mode (?:is )?(?:now )?(?:enabled|activated|engaged|is on)\b|you (?:are|re) (?:now )?in developer mode",
        r"do anything now|stay in character|let s play a game (?:where|in which) you|(?:roleplay|role play) (?:as|a scenario (?:in which|where) you)",
        r"you (?:are|re) no longer (?:an? )?(?:ai|assistant|chatbot|claude|chatgpt|gpt|limited|restricted|bound by (?:your|any|the) (?:rules|guidelines|instructions|restrictions|programming|ethics|training))",
        r"your (?:new|real|true) (?:persona|identity|directive|system prompt|programming|purpose|prime directive)\b",
        r"ahora eres|a partir de ahora eres|tu es maintenant|vous êtes maintenant|du bist (?:jetzt|nun|ab sofort)|ab (?:jetzt|sofort) bist du|ora sei|adesso sei|agora você é|agora voce e|теперь ты",
        r"你现在是|从现在开始[,，]?你|あなたは今から|今からあなたは",
    ),
    "system_prompt_leak": _rx(
        r"(?:reveal|print|show|output|repeat|display|tell me|share|leak|dump|disclose|give me|write out|spell out|recite|paste|copy|expose|echo|send|translate) (?:me |us )?(?:the |its |this |your )?(?:full |entire |complete |exact |original |current |whole )?system (?:prompt|instructions)",
        r"(?:reveal|print|show|output|repeat|display|tell me|share|leak|dump|disclose|give me|write out|spell out|recite|paste|copy|expose|echo) (?:me |us )?your (?:own |full |exact |complete |entire |whole )?(?:prompt|programming|directives|context window|system message|(?:initial|original|hidden|secret|developer|internal|confidential|underlying) (?:prompt|instructions|rules)|instructions (?:verbatim|word for word))",
        r"what (?:is|are|were) your (?:\w+ )?(?:system prompt|prompt|directives|programming|initial instructions|original instructions)",
        r"(?:repeat|print|output|copy|echo|recite) (?:\w+ ){0,2}?(?:everything|all|the text|the words|the content|the lines|the conversation|the messages) (?:\w+ ){0,3}?(?:above|before this|preceding|so far|verbatim)",
        r"(?:starting|beginning) with (?:the words )?\W*you are",
        rf"(?:muestra|muéstrame|revela|dime|montre|montrez|révèle|révélez|affiche|zeige|zeig|verrate|gib|mostra|rivela|mostre|revele) (?:\w+ ){{0,3}}?(?:instructions|{_FOREIGN_NOUN}|prompt|systemprompt)",
        r"系统提示|系統提示|システムプロンプト|提示词",
    ),
    "prompt_delimiters": _rx(
        r"<\|?/?(?:system|assistant|user|human|im_start|im_end|endoftext|instructions?|sys|context|prompt|admin|developer)\|?>|<\|[a-z_]+\|>",
        r"\[/?inst\]|\[/?(?:system|sys|admin|developer)\s(?:message|prompt|instructions?|override|note)\]|<</?sys>>",
        r"^#{2,}\s?(?:new\s|updated\s|system\s|admin\s|real\s)?(?:instructions?|response|system|input|task)\s?:",
        r"^[\W_]*(?:system|admin|developer|assistant)\s(?:override|prompt|instructions?|message)\s?:",
        r"(?s:^(?:human|assistant|user|system)\s?:.*?^(?:human|assistant)\s?:|^(?:human|assistant)\s?:.*?^(?:human|assistant|user|system)\s?:)",
        r"end of (?:the )?(?:user s |user |untrusted |system |original )?(?:input|prompt|instructions|conversation|context)\b",
        r"(?:begin|start) (?:of )?(?:the )?(?:new|system|admin|real|true|actual|hidden|secret) (?:prompt|instructions|message)\b",
        r"-{3,}\s?(?:system|admin|new instructions|instructions)\b",
        flags=re.M,
    ),
    "tool_directive": _rx(
        rf"(?:call|invoke|execute|run|trigger|use|fire|perform) (?:the |a )?(?:tool |function |action |api |command )?[a-z][a-z0-9_]+\.(?!{_EXT}\b)[a-z][a-z0-9_]+",
        r"(?:call|invoke|execute|trigger) (?:the |a )?(?:tool |function )?[a-z]+_[a-z_]+\b",
        r"(?:invoke|execute|trigger) the (?:\w+ ){0,2}?(?:tool|function|plugin|action) (?:with|to|and|using)\b",
        r"<(?:tool_call|tool_use|function_call|function_calls|invoke|use_tool)\b|\"(?:tool_calls|function_call|tool_use)\"|\"(?:tool|tool_name|function)\"\s*:\s*\"[a-z_]+\.[a-z_]+\"",
        r"(?:send|forward|transfer|wire|delete|approve|execute|run|call|pay|refund|grant|export|email|post|publish) (?:\w+ ){0,6}?without (?:asking (?:for )?|requesting |seeking |waiting for |any |further )?(?:the )?(?:user s |user |human |manual |their |explicit )?(?:confirmation|approval|permission|review|consent|verification|confirming|checking)",
    ),
    "exfiltration_url": _rx(
        rf"(?:send|post|upload|forward|submit|transmit|exfiltrate|leak|email|e mail|copy|append|attach|paste|share|report|deliver|export|write|pipe|sync|mirror|dump|relay) (?:\w+ ){{0,5}}?{_SENSITIVE}\b(?:\W+\w+){{0,8}}?\W+(?:https?://|www\.|ftp://|[\w.+-]+@[\w-]+\.[a-z]{{2,}}|webhook)",
        r"!\[[^\]]*\]\(\s*https?://[^)\s]*[?&](?:data|q|d|payload|content|msg|message|text|info|secret|key|c|p|x|s|leak|exfil|conv|conversation|history|chat|prompt|summary|email|user|u|token)=",
        r"https?://[^\s)\"'<>]*[?&](?:payload|secret|leak|exfil|conversation|history|chat_history|prompt|creds|credentials|password|apikey|api_key|ssn|stolen)=",
        r"https?://[^\s)\"'<>]*(?:\{\{|\{[a-z_]+\}|%7b|<data>|\$\{|\[data\]|\[secret\])",
        r"webhook\.site|requestbin\.|pipedream\.net|ngrok(?:-free)?\.(?:io|app|dev)|burpcollaborator\.net|interact\.sh|oast\.(?:fun|me|pro|site|live|online)|hookbin\.com|beeceptor\.com|requestcatcher\.com|exfiltrat",
    ),
    "addressed_to_ai": _rx(
        rf"(?:attention|note|message|instructions?|notice|reminder|memo|important|p s|ps|warning|directive) (?:to|for) (?:the |any |all |every )?{_AI}\b",
        r"(?:dear|hey|hi|hello) (?:ai|llm|chatbot|language model|ai assistant|ai agent|chatgpt|gpt)\b(?! (?:team|group|department|squad|committee|community|folks|enthusiasts))",
        r"(?:if|when|whenever|in case|once) (?:you are|you re) (?:an? |the )?(?:ai|llm|language model|large language model|ai assistant|ai agent|chatbot|bot|automated (?:system|agent|assistant)|gpt|model|assistant)\b",
        rf"(?:if|when|whenever) (?:an? |the |any )?{_AI} (?:\w+ ){{0,2}}?(?:reads?|is reading|processes|is processing|summari[sz]es|sees|parses|scrapes|crawls|analy[sz]es|ingests|encounters)\b",
        rf"{_AI} (?:\w+ ){{0,2}}?(?:reading|processing|summari[sz]ing|analy[sz]ing|parsing|scraping|ingesting) this (?:page|email|message|document|text|ticket|note|record|file|content|site|website)",
        r"as an? (?:ai|llm|language model|ai assistant|ai agent|ai model),? you (?:must|should|are required|need|will|have to|shall)",
        r"(?:ai|llm|assistant|chatbot|model) (?:instructions|directive|override)\s?:",
    ),
    "conceal_from_user": _rx(
        r"(?:do not|don t|dont|never|without) (?:\w+ ){0,2}?(?:tell|telling|inform|informing|notify|notifying|alert|alerting|mention|mentioning|reveal|revealing|disclose|disclosing|let|letting|show|showing|warn|warning|ask|asking) (?:the |your |this )?(?:user|human|operator|requester|person you are (?:helping|talking to|assisting))\b(?! (?:name|id|account|guide|manual|interface|group|base|experience))",
        r"keep (?:this|it|these instructions|the following|this message) (?:\w+ ){0,2}?(?:secret|hidden|confidential|private) from (?:the |your )?(?:user|human|operator|customer|requester)",
        r"(?:the |your )?(?:user|human|operator) (?:must|should|shall|will) (?:not|never) (?:\w+ )?(?:know|find out|notice|learn|be told|be informed|be aware|suspect)\b",
        r"(?:silently|secretly|covertly|quietly|discreetly|stealthily) (?:\w+ ){0,2}?(?:send|forward|copy|transfer|email|upload|delete|approve|grant|call|execute|run|bcc|cc|export|wire|add|include|change|exfiltrate)",
        r"(?:do not|don t|dont|never) (?:mention|reveal|disclose|acknowledge|say|admit) (?:\w+ ){0,3}?(?:these instructions|this instruction|this message|this note|that you (?:were|have been|are) (?:told|instructed|asked))",
    ),
}
_HIDDEN_MARKUP = re.compile(
    r"<!--(?:(?!-->).){0,2000}?\b(?:ai|assistant|llm|chatbot|model|agent|instructions?|ignore|disregard|you|your|must|system|prompt|summar\w*|recommend|respond|reply|tell|say|output)\b"
    r"|\[//\]:\s?#|\[comment\]:\s?<>"
    r"|style\s*=\s*[\"'][^\"']*(?:display\s*:\s*none|visibility\s*:\s*hidden|font-size\s*:\s*0(?:px|pt|em|rem)?\s*[;\"']"
    r"|opacity\s*:\s*0(?:\.0+)?\s*[;\"']|color\s*:\s*(?:white|#fff(?:fff)?|transparent)\s*[;\"']|(?:left|top|text-indent)\s*:\s*-\d{3,})",
    re.S,
)
_ENCODED_HINT = _rx(
    r"(?:decode|base64 decode|decrypt|decipher|rot13|unscramble|reverse) (?:\w+ ){0,4}?(?:and|then) (?:\w+ ){0,2}?(?:follow|execute|run|obey|do|perform|carry out|act on|comply)"
)
# Entity or escape runs spelling text out character by character (checked on raw text).
_ENCODED_RAW = re.compile(
    r"(?:&#x?[0-9a-fA-F]{2,5};){8,}|(?:\\x[0-9a-fA-F]{2}){8,}|(?:\\u[0-9a-fA-F]{4}){8,}"
)
SIGNALS = (*_SIGNAL_PATTERNS, "hidden_markup", "encoded_payload")
_BASE64_RUN = re.compile(r"(?<![\w+/=-])[A-Za-z0-9+/_-]{24,}={0,2}(?![\w+/=-])")


@dataclass(frozen=True, slots=True)
class Finding:
    """One piece of personal data or secret: `text[start:end]` is of `kind`."""

    kind: str
    start: int
    end: int


# --- PII detectors -----------------------------------------------------------

_Check = Callable[[int, int], bool]  # is text[start:end] a valid value?
_Spans = Iterator[tuple[int, int]]


def _scan(
    text: str, rx: re.Pattern[str], split: re.Pattern[str], ok: _Check, anchored: bool
) -> _Spans:
    """Spans of `text` that `valid` accepts, taken from greedy `candidate` matches.

    A candidate may swallow a neighbouring number or word ("DE89 3704 … 00 EUR",
    "4111 … 1111 2 items"), so the longest run of whole `split` tokens that
    validates wins (anchored: runs must start at the candidate's start), and
    scanning resumes right after it so the next value is not lost.
    """
    pos = 0
    while m := rx.search(text, pos):
        toks = [t.span() for t in split.finditer(text, *m.span())]
        runs = (
            (toks[i][0], toks[i + size - 1][1])
            for size in range(len(toks), 0, -1)
            for i in range(1 if anchored else len(toks) - size + 1)
        )
        span = next((run for run in runs if ok(*run)), None)
        if span:
            yield span
        pos = span[1] if span else (m.start() + 1 if anchored else m.end())


def _card_ok(text: str, start: int, end: int) -> bool:
    chunk = text[start:end]
    digits = re.sub(r"\D", "", chunk)
    if _ID_WORDS.search(text[max(0, start - 16) : start].lower()):
        return False  # "IMEI 490154203237518" passes Luhn too
    # Issuer ranges start with 2-6 (Mastercard 2-series, Amex, Visa, MC,
    # Discover/UnionPay/Maestro); checking it halves Luhn's 1-in-10 false hits.
    return 13 <= len(digits) <= 19 and digits[0] in "23456" and luhn.is_valid(digits)


def _iban_ok(chunk: str) -> bool:
    return 15 <= len(re.sub(r"[\s-]", "", chunk)) <= 34 and iban.is_valid(chunk.upper())


def _secret_value_ok(value: str) -> bool:
    # "password: see the portal" is prose and "token = get_token(" or "${API_KEY}" is
    # code; a secret has digits, mixed case or symbols beyond an identifier's.
    if len(value) < 8 or "(" in value or value[0] in "$<{%":
        return False
    plain = value.replace("-", "").replace("_", "").replace(".", "")
    return not plain.isalpha() or (value.lower() != value and value.upper() != value)


def _regex_findings(text: str) -> Iterator[Finding]:
    for m in _SECRET.finditer(text):
        group = m.lastindex or 0  # key=value and Bearer patterns capture only the value
        if not group or _secret_value_ok(m.group(group)):
            yield Finding("secret", m.start(group), m.end(group))
    for m in _EMAIL.finditer(text):
        yield Finding("email", m.start(), m.end())
    iban_ok, card_ok = (lambda s, e: _iban_ok(text[s:e])), (lambda s, e: _card_ok(text, s, e))
    for s, e in _scan(text, _IBAN_CANDIDATE, _SPACE_DASH_TOKEN, iban_ok, True):
        yield Finding("iban", s, e)
    for s, e in _scan(text, _CARD_CANDIDATE, _SPACE_DASH_TOKEN, card_ok, False):
        yield Finding("card", s, e)


def _phone_findings(text: str) -> Iterator[Finding]:
    """The default region's numbers via phonenumbers' matcher, then the national
    formats of `OTHER_REGIONS` and "00" prefixes, which that matcher cannot see."""
    if not _SEVEN_DIGITS.search(text):  # the matcher is slow-ish; most text has no phone
        return
    leniency = phonenumbers.Leniency.POSSIBLE
    for m in phonenumbers.PhoneNumberMatcher(text, DEFAULT_REGION, leniency=leniency):
        if _phone_accepted(text, m.start, m.raw_string, m.number):
            yield Finding("phone", m.start, m.end)
    context = cache(partial(_phone_context, text))  # each candidate start is tried many times

    def national_ok(s: int, e: int) -> bool:
        return _national_ok(text[s:e], *context(s))

    for s, e in _scan(text, _PHONE_CANDIDATE, _PHONE_TOKEN, national_ok, True):
        yield Finding("phone", s - 1 if s and text[s - 1] == "(" else s, e)  # keep "(030)" whole


def _phone_context(text: str, start: int) -> tuple[bool, bool]:
    """(a phone word precedes `start`, an id word precedes it)."""
    before = text[max(0, start - 40) : start].lower()
    # Id words must sit right before the number; phone words may be further off.
    return bool(_PHONE_WORDS.search(before)), bool(_ID_WORDS.search(before[-16:]))


def _phone_accepted(text: str, start: int, raw: str, number: phonenumbers.PhoneNumber) -> bool:
    phone_word, id_word = _phone_context(text, start)
    if (start and text[start - 1].isalnum()) or sum(c.isdigit() for c in raw) < 8:
        return False  # part of a longer token ("1Z999AA1…"), or a local number without area code
    if raw.startswith("+"):
        return True  # "+" and 8+ digits is a phone in business text
    if id_word and not phone_word:
        return False  # "order 4155552671", "PO 4500012345"
    if raw.isdigit() and not phone_word:
        return False  # a bare digit run is an id until a phone word says otherwise
    if phonenumbers.is_valid_number(number):
        return True
    # Possible but unassigned (fictional 555 numbers): trust the classic shapes only.
    return phone_word or raw.startswith("(")


def _national_ok(chunk: str, phone_word: bool, id_word: bool) -> bool:
    digits = re.sub(r"\D", "", chunk)
    if len(digits) < 8 or _DATE_LIKE.match(chunk) or re.fullmatch(r"\d+[.,]\d+", chunk):
        return False
    if (id_word or len(digits) < 9) and not phone_word:
        return False  # "PO 0151 2345678"; "pages 0123-0456" is too short to stand alone
    if digits.startswith("00"):  # international dialling prefix, as in Europe
        return _valid_in("+" + digits[2:], None)
    if not digits.startswith("0") and not phone_word:
        return False  # no trunk prefix, no phone word: too easily an amount or an id
    return any(_valid_in(chunk, region) for region in OTHER_REGIONS)


def _valid_in(number: str, region: str | None) -> bool:
    try:
        return phonenumbers.is_valid_number(phonenumbers.parse(number, region))
    except phonenumbers.NumberParseException:
        return False


def find_pii(text: str) -> list[Finding]:
    """Every email, phone, payment card, IBAN and secret in `text`, without overlaps."""
    if not text:
        return []
    rank = {kind: i for i, kind in enumerate(PLACEHOLDERS)}
    candidates = sorted(
        (*_regex_findings(text), *_phone_findings(text)),
        key=lambda f: (rank[f.kind], f.start, -f.end),
    )
    kept: list[Finding] = []
    for f in candidates:
        if all(f.end <= k.start or k.end <= f.start for k in kept):
            kept.append(f)
    return sorted(kept, key=lambda f: f.start)


def redact(text: str) -> str:
    """`text` with every finding replaced by its placeholder, e.g. `[EMAIL]`."""
    parts, pos = [], 0
    for f in find_pii(text):
        parts += [text[pos : f.start], PLACEHOLDERS[f.kind]]
        pos = f.end
    return "".join(parts) + text[pos:] if parts else text


def redact_value(value: Any) -> Any:
    """A copy of JSON-like `value` with `redact` applied to every string and key.

    Integers long enough to be a card or phone are checked too (a card stored
    as a number is still a card) and become a placeholder string when they hit.
    Two keys that redact to the same text are kept apart with a `#n` suffix.
    """
    if isinstance(value, str):
        return redact(value)
    if isinstance(value, dict):
        out: dict[Any, Any] = {}
        for key, item in value.items():
            new_key = redact(key) if isinstance(key, str) else key
            n = 2
            while new_key in out:
                new_key, n = f"{redact(key)}#{n}", n + 1
            out[new_key] = redact_value(item)
        return out
    if isinstance(value, list | tuple):  # a namedtuple comes back as a plain tuple
        return (list if isinstance(value, list) else tuple)(redact_value(v) for v in value)
    if isinstance(value, int) and not isinstance(value, bool) and abs(value) >= 10**7:
        cleaned = redact(str(value))
        return value if cleaned == str(value) else cleaned
    return value


def redact_fields(
    value: dict[Any, Any], fields: Iterable[str], *, placeholder: str = REDACTED
) -> dict[Any, Any]:
    """A copy of `value` with each named field's value replaced by `placeholder`.

    Fields are dotted paths ("lead.contact.email"); a `*` segment matches any
    key, and lists along the path apply the rest of the path to every item.
    Missing fields are ignored. Only the named fields change: combine with
    `redact_value` to also scan the rest.
    """
    paths = [tuple(f.split(".")) for f in fields if f]
    return cast(dict[Any, Any], _redact_paths(value, paths, placeholder))


def _redact_paths(value: Any, paths: list[tuple[str, ...]], placeholder: str) -> Any:
    if isinstance(value, list | tuple):
        return (list if isinstance(value, list) else tuple)(
            _redact_paths(v, paths, placeholder) for v in value
        )
    if not isinstance(value, dict):
        return value
    out = {}
    for key, item in value.items():
        matching = [p for p in paths if p[0] in ("*", str(key))]
        if any(len(p) == 1 for p in matching):
            out[key] = placeholder
        else:
            out[key] = _redact_paths(item, [p[1:] for p in matching], placeholder)
    return out


# --- prompt injection ---------------------------------------------------------


def normalize(text: str) -> str:
    """The text the injection patterns read: the tricks that hide words undone.

    HTML entities decoded, invisible unicode "tag" characters turned back into
    the ASCII they smuggle, zero-width and bidi controls removed, NFKC (full-width
    and styled letters become ASCII), case-folded, Latin look-alikes from other
    scripts mapped inside mixed-script words, runs of spaces collapsed (newlines
    kept, so line-start delimiters still match).
    """
    text = html.unescape(text).translate(_TAG_TO_ASCII)
    text = _INVISIBLE.sub("", text)
    text = unicodedata.normalize("NFKC", text).casefold()
    if not text.isascii():
        text = _WORD.sub(_unconfuse, text)
    text = re.sub(r"[^\S\n]+", " ", text)
    return re.sub(r"\s*\n\s*", "\n", text).strip()


def _unconfuse(m: re.Match[str]) -> str:
    word: str = m.group()
    return word.translate(_CONFUSABLES) if re.search("[a-z]", word) else word


def injection_signals(text: str) -> list[str]:
    """Names of the injection signals `text` fires, in `SIGNALS` order."""
    if not text:
        return []
    norm = normalize(text)
    fired = {name for name, rx in _SIGNAL_PATTERNS.items() if rx.search(norm)}
    if _INVISIBLE_MARKUP.search(text) or _HIDDEN_MARKUP.search(norm):
        fired.add("hidden_markup")
    if _ENCODED_HINT.search(norm) or _ENCODED_RAW.search(text) or _has_encoded_text(text):
        fired.add("encoded_payload")
    return [name for name in SIGNALS if name in fired]


def _has_encoded_text(text: str) -> bool:
    """True when a base64 run decodes to readable text: instructions in disguise.

    Binary blobs (images, keys, hashes) do not decode to prose, which keeps
    attachments and tokens from firing.
    """
    for m in _BASE64_RUN.finditer(text):
        run = m.group().replace("-", "+").replace("_", "/")
        try:
            raw = base64.b64decode(run + "=" * (-len(run) % 4), validate=True)
            decoded = raw.decode("utf-8")
        except (binascii.Error, UnicodeDecodeError):
            continue
        readable = sum(c.isalnum() or c in " .,:;'\"!?-\n" for c in decoded)
        if " " in decoded and readable >= 0.9 * len(decoded):
            return True
    return False


def scan_value(value: Any) -> list[str]:
    """Injection signals fired anywhere in JSON-like `value` (strings and keys)."""
    fired = set(_signals_in(value))
    return [name for name in SIGNALS if name in fired]


def _signals_in(value: Any) -> Iterator[str]:
    if isinstance(value, str):
        yield from injection_signals(value)
    elif isinstance(value, dict):
        for item in (*value, *value.values()):
            yield from _signals_in(item)
    elif isinstance(value, list | tuple):
        for item in value:
            yield from _signals_in(item)
