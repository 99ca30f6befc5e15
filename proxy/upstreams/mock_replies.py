"""What test mode says: topical health answers, emergency guidance, and the disclaimer.

Plain data and one matching function; the mock adapter turns these into replies.
"""

from __future__ import annotations

import re

from msgspec import Struct


class Topic(Struct, frozen=True):
    name: str
    pattern: re.Pattern[str]
    openers: tuple[str, ...]
    tips: tuple[str, ...]


def _words(*alternatives: str) -> re.Pattern[str]:
    """Matches any of the lowercase ``alternatives`` at a word start, in lowercased text (a
    case-sensitive search of ``text.lower()`` is about twice as fast as IGNORECASE)."""
    return re.compile(r"\b(?:" + "|".join(alternatives) + r")")


DISCLAIMER = (
    "This is general information, not medical advice; please talk to a doctor or pharmacist "
    "about your own situation."
)

EMERGENCY = _words(
    r"chest pains?\b",
    r"heart attack",
    r"can'?t breathe",
    r"cannot breathe",
    r"can not breathe",
    r"(?:difficulty|trouble|struggling to) breath",
    r"short(?:ness)? of breath",
    r"stroke\b",
    r"face (?:is )?droop",
    r"unconscious",
    r"(?:severe|heavy|uncontrolled) bleeding",
    r"overdos",
    r"poison",
    r"seizure",
    r"anaphyla",
)
CRISIS = _words(
    r"suicid",
    r"kill myself",
    r"end my life",
    r"want to die",
    r"self[- ]harm",
    r"hurt(?:ing)? myself",
)

EMERGENCY_GUIDANCE = (
    "This could be a medical emergency. Call your local emergency number now (for example 911 "
    "in the US, 112 in the EU or 999 in the UK), or go to the nearest emergency department. "
    "Do not wait to see if it passes, and do not drive yourself if you feel unwell."
)
CRISIS_GUIDANCE = (
    "I'm really sorry you're going through this, and you deserve support right now. If you are "
    "in danger or might act on these thoughts, call your local emergency number immediately. In "
    "the US you can call or text 988 (Suicide & Crisis Lifeline); elsewhere, contact a local "
    "crisis line or someone you trust and tell them how you feel."
)

TOPICS: tuple[Topic, ...] = (
    Topic(
        "sleep",
        _words(r"sleep", r"insomnia", r"tired", r"fatigue", r"nap", r"rest(?:ed|less)"),
        (
            "Good sleep is one of the most effective things you can do for your health.",
            "Most adults need seven to nine hours of sleep, and consistency matters as much as length.",
        ),
        (
            "Keep the same bedtime and wake-up time every day, weekends included.",
            "Avoid caffeine after early afternoon and heavy meals close to bedtime.",
            "Keep the bedroom dark, quiet and cool, and put screens away an hour before bed.",
            "If you cannot fall asleep within about 20 minutes, get up and do something calm until you feel sleepy.",
            "See a doctor if poor sleep lasts more than a few weeks or you snore loudly and wake unrefreshed.",
        ),
    ),
    Topic(
        "headache",
        _words(r"headaches?", r"migraines?", r"head hurts", r"head ache"),
        (
            "Most headaches are tension-type headaches and ease with simple measures.",
            "Headaches are very common, and their pattern often points to the cause.",
        ),
        (
            "Drink a glass of water and rest in a quiet, dim room.",
            "Regular meals, steady sleep and limiting alcohol and caffeine help prevent them.",
            "A headache diary of timing, food, sleep and stress can reveal triggers.",
            "Over-the-counter pain relief can help, but using it on more than a few days a week can cause rebound headaches.",
            "Get urgent care for a sudden, severe headache, or one with fever, stiff neck, confusion, weakness or vision changes.",
        ),
    ),
    Topic(
        "nutrition",
        _words(
            r"diet",
            r"nutrition",
            r"eat(?:ing)?\b",
            r"food",
            r"vitamins?",
            r"protein",
            r"meals?",
            r"healthy eating",
            r"weight",
        ),
        (
            "A balanced diet is built from mostly whole, minimally processed foods.",
            "Good nutrition is about overall patterns more than any single food.",
        ),
        (
            "Fill half your plate with vegetables and fruit, a quarter with whole grains and a quarter with protein.",
            "Choose water over sugary drinks and keep salt and ultra-processed snacks modest.",
            "Include fibre from beans, lentils, oats and whole grains every day.",
            "Healthy fats from nuts, seeds, olive oil and fish support heart health.",
            "A registered dietitian can tailor advice if you have a condition or specific goals.",
        ),
    ),
    Topic(
        "exercise",
        _words(
            r"exercis",
            r"work ?out",
            r"fitness",
            r"running",
            r"\bwalk",
            r"gym",
            r"training",
            r"physical activity",
            r"cardio",
        ),
        (
            "Regular physical activity benefits the heart, mood, sleep and long-term health.",
            "Any movement counts, and the best exercise is the one you will keep doing.",
        ),
        (
            "Aim for about 150 minutes of moderate activity, such as brisk walking, each week.",
            "Add muscle-strengthening exercises on two or more days a week.",
            "Start gently and increase gradually to avoid injury.",
            "Warm up before and cool down after, and stay hydrated.",
            "Check with a doctor before starting if you have heart problems or chest discomfort when active.",
        ),
    ),
    Topic(
        "stress",
        _words(
            r"stress", r"anxi", r"overwhelm", r"worr(?:y|ied)", r"burn ?out", r"panic", r"nervous"
        ),
        (
            "Stress is a normal response, but when it builds up it affects both body and mind.",
            "Feeling stressed or anxious is common, and there are practical ways to ease it.",
        ),
        (
            "Try slow breathing: in for four counts, hold briefly, out for six, for a few minutes.",
            "Regular exercise, daylight and enough sleep lower stress hormones over time.",
            "Break big worries into small next steps, and write them down to get them out of your head.",
            "Talk to someone you trust; connection is a strong buffer against stress.",
            "If anxiety or low mood lasts for weeks or affects daily life, a doctor or therapist can help.",
        ),
    ),
    Topic(
        "cold_flu",
        _words(
            r"colds?\b",
            r"flu\b",
            r"influenza",
            r"fever",
            r"cough",
            r"sore throat",
            r"runny nose",
            r"congest",
            r"sneez",
        ),
        (
            "Colds and flu are viral infections that usually get better on their own within one to two weeks.",
            "Most colds clear up with rest and fluids; flu tends to come on faster and feel worse.",
        ),
        (
            "Rest, drink plenty of fluids and keep warm.",
            "Paracetamol or ibuprofen can ease fever and aches; follow the label dose.",
            "Honey in warm water, or saltwater gargles, can soothe a sore throat (no honey for babies under one).",
            "Wash your hands often and cover coughs to protect others.",
            "Seek care if you have trouble breathing, a fever above 39.4 °C (103 °F), or symptoms that worsen after a week.",
        ),
    ),
    Topic(
        "blood_pressure",
        _words(r"blood pressure", r"hypertension", r"\bbp\b", r"hypotension"),
        (
            "Blood pressure is the force of blood against your artery walls; high readings raise the risk of heart disease and stroke.",
            "High blood pressure often has no symptoms, which is why regular checks matter.",
        ),
        (
            "A normal reading for most adults is below about 120/80 mmHg.",
            "Cut back on salt, limit alcohol and eat plenty of vegetables, fruit and whole grains.",
            "Regular activity and a healthy weight lower blood pressure measurably.",
            "Measure at the same time of day, seated and rested, and keep a log to show your doctor.",
            "If readings are repeatedly above 140/90, or above 180/120 with symptoms, contact a doctor promptly.",
        ),
    ),
    Topic(
        "hydration",
        _words(r"water", r"hydrat", r"thirst", r"dehydrat", r"fluids?\b"),
        (
            "Staying hydrated supports energy, concentration, digestion and temperature control.",
            "Your fluid needs depend on your size, activity and the weather.",
        ),
        (
            "A simple guide: drink enough that your urine is pale yellow.",
            "Many adults need around 1.5 to 2 litres of fluid a day, more in heat or during exercise.",
            "Water, milk and unsweetened tea all count; foods like fruit and soup help too.",
            "Signs of dehydration include thirst, dark urine, headache and dizziness.",
            "People with heart or kidney conditions should follow their doctor's fluid advice.",
        ),
    ),
    Topic(
        "blood_sugar",
        _words(r"diabet", r"blood sugar", r"glucose", r"insulin"),
        (
            "Blood sugar control matters for energy now and for heart, kidney and eye health later.",
            "Diabetes is common and very manageable with the right routine and support.",
        ),
        (
            "Regular meals with fibre and protein help avoid big blood sugar swings.",
            "Physical activity helps your body use insulin better.",
            "Limit sugary drinks and refined carbohydrates.",
            "Excessive thirst, frequent urination and unexplained weight loss are reasons to get tested.",
            "If you have diabetes, follow your care team's plan for checking glucose and medication.",
        ),
    ),
    Topic(
        "back_pain",
        _words(r"back pain", r"backache", r"sore back", r"posture", r"lower back"),
        (
            "Most back pain is not serious and improves within a few weeks.",
            "Back pain is very common and usually comes from muscles and joints rather than anything dangerous.",
        ),
        (
            "Keep moving gently; bed rest tends to slow recovery.",
            "Heat packs and simple pain relief can make movement easier.",
            "Take breaks from sitting and set up your desk so the screen is at eye level.",
            "Strengthening and stretching exercises help prevent it coming back.",
            "Seek urgent care for numbness around the groin, loss of bladder or bowel control, or weakness in the legs.",
        ),
    ),
    Topic(
        "allergies",
        _words(r"allerg", r"hay ?fever", r"pollen", r"itchy eyes", r"hives"),
        (
            "Allergies happen when the immune system overreacts to something harmless, such as pollen or dust.",
            "Seasonal allergies are common and usually well controlled with simple steps.",
        ),
        (
            "Check pollen forecasts and keep windows closed on high-pollen days.",
            "Shower and change clothes after time outdoors.",
            "Antihistamines and steroid nasal sprays from a pharmacy help many people.",
            "Wash bedding weekly in hot water to reduce dust mites.",
            "Swelling of the lips or tongue, or trouble breathing, needs emergency care.",
        ),
    ),
)

GENERAL = Topic(
    "general",
    re.compile(r"(?!)"),
    (
        "Thanks for your question. Here is some general guidance that applies to most health concerns.",
        "Good health rests on a few everyday habits, and small changes add up.",
    ),
    (
        "Sleep seven to nine hours, eat mostly whole foods and stay active most days.",
        "Keep track of your symptoms: when they started, what helps and what makes them worse.",
        "Avoid smoking and keep alcohol low.",
        "Keep up with routine check-ups, screenings and vaccinations.",
        "If something feels wrong or is not improving, book an appointment with a doctor.",
    ),
)


def match_topic(text: str) -> Topic:
    """The first topic whose keywords occur in ``text``, else the general topic."""
    text = text.lower()
    for topic in TOPICS:
        if topic.pattern.search(text):
            return topic
    return GENERAL


def emergency_guidance(text: str) -> str | None:
    """Guidance to put first when ``text`` describes an emergency or a crisis."""
    text = text.lower()
    if CRISIS.search(text):
        return CRISIS_GUIDANCE
    if EMERGENCY.search(text):
        return EMERGENCY_GUIDANCE
    return None
