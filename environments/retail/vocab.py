"""Fixed vocabularies the retail generator draws from (names, places, products, options)."""

from __future__ import annotations

FIRST_NAMES = """
aarav ada aisha alex amelia anya arjun ava ben bianca carlos chen chloe daniel diego dmitri elena eli
emma ethan fatima felix fiona gabriel grace hana harper hassan ines isabella ivan jack james jin
juan julia kai kenji lara layla leo liam lucas luna maria mason mei mia mohamed nadia noah nora
olivia omar oscar priya rafael raj rosa ruby sam sara sofia sophia tara theo tomas uma victor yara
yusuf zoe anna bruno clara david emily finn hugo iris jonas kira lena marco nina owen paula quinn
rhea simon tess vera will xena yosef zara
""".split()

LAST_NAMES = """
adams ahmed ali anderson brown chen clark cohen davis diaz evans fischer garcia gonzalez gray green
hall harris hernandez hill ito jackson johnson jones kim king kowalski lee lewis lopez martin
martinez miller moore morales muller nakamura nguyen novak oconnor olsen patel perez petrov
phillips ramirez reyes roberts robinson rossi sanchez santos schmidt scott silva singh smith
sullivan suzuki taylor thomas thompson torres walker white williams wilson wong wright yamamoto
young zhang baker bell campbell carter collins cook cooper edwards foster hughes kelly mitchell
murphy nelson parker powell price reed rivera russell stewart ward watson wood
""".split()

# (city, state, first three zip digits): a zip is the prefix followed by two random digits.
CITIES = [
    ("Austin", "TX", 787), ("Houston", "TX", 770), ("Dallas", "TX", 752), ("Denver", "CO", 802),
    ("Seattle", "WA", 981), ("Portland", "OR", 972), ("San Francisco", "CA", 941), ("Los Angeles", "CA", 900),
    ("San Diego", "CA", 921), ("Phoenix", "AZ", 850), ("Chicago", "IL", 606), ("New York", "NY", 100),
    ("Brooklyn", "NY", 112), ("Boston", "MA", 21), ("Philadelphia", "PA", 191), ("Pittsburgh", "PA", 152),
    ("Atlanta", "GA", 303), ("Miami", "FL", 331), ("Orlando", "FL", 328), ("Charlotte", "NC", 282),
    ("Nashville", "TN", 372), ("Columbus", "OH", 432), ("Detroit", "MI", 482), ("Minneapolis", "MN", 554),
    ("Milwaukee", "WI", 532), ("Kansas City", "MO", 641), ("Las Vegas", "NV", 891), ("Salt Lake City", "UT", 841),
    ("Albuquerque", "NM", 871), ("Baltimore", "MD", 212), ("Richmond", "VA", 232), ("Raleigh", "NC", 276),
    ("Indianapolis", "IN", 462), ("Louisville", "KY", 402), ("New Orleans", "LA", 701), ("Omaha", "NE", 681),
    ("Tucson", "AZ", 857), ("Sacramento", "CA", 958), ("Boise", "ID", 837), ("Madison", "WI", 537),
]

STREETS = """
Maple Oak Pine Cedar Elm Willow Birch Spruce Chestnut Walnut Hickory Magnolia Laurel Aspen Sycamore
Lake Hill River Park Forest Meadow Sunset Highland Valley Ridge Spring Main Market Church Mill Union
Washington Lincoln Jefferson Franklin Madison Adams Jackson Monroe
""".split()
STREET_SUFFIXES = ["Street", "Avenue", "Drive", "Lane", "Road", "Court", "Place", "Boulevard"]

CARD_BRANDS = ["visa", "mastercard", "amex", "discover"]

# option name -> values
OPTIONS: dict[str, list[str]] = {
    "color": ["black", "white", "red", "blue", "green", "gray", "silver", "gold", "pink", "purple", "brown",
              "navy", "beige", "orange", "yellow"],
    "size": ["XS", "S", "M", "L", "XL", "XXL"],
    "shoe size": ["6", "7", "8", "9", "10", "11", "12"],
    "material": ["cotton", "polyester", "leather", "mesh", "wood", "metal", "plastic", "glass", "bamboo",
                 "stainless steel", "fabric", "nylon"],
    "capacity": ["250ml", "500ml", "750ml", "1L", "1.5L", "2L"],
    "storage": ["32GB", "64GB", "128GB", "256GB", "512GB", "1TB"],
    "screen size": ["7-inch", "8-inch", "10-inch", "11-inch", "13-inch", "15-inch", "17-inch"],
    "style": ["classic", "modern", "sport", "vintage", "minimalist", "rugged"],
    "power": ["battery", "AC adapter", "USB", "solar", "rechargeable"],
    "connectivity": ["wired", "bluetooth", "wireless", "Wi-Fi", "Wi-Fi + cellular"],
    "weight": ["5 lbs", "10 lbs", "15 lbs", "20 lbs", "25 lbs", "30 lbs"],
    "pieces": ["300", "500", "1000", "1500", "2000"],
    "resolution": ["720p", "1080p", "2K", "4K", "5K"],
    "scent": ["citrus", "lavender", "rose", "vanilla", "sandalwood", "ocean"],
    "pattern": ["solid", "striped", "checkered", "floral", "geometric"],
    "compatibility": ["Apple", "Android", "universal", "Google", "Amazon"],
    "length": ["25ft", "50ft", "75ft", "100ft"],
    "type": ["standard", "pro", "deluxe", "compact", "travel"],
}

# product name -> option names (their cartesian product must be >= the variants wanted; the
# generator falls back to all combinations when it is smaller).
PRODUCTS: list[tuple[str, list[str]]] = [
    ("Action Camera", ["resolution", "color", "storage"]),
    ("Air Purifier", ["type", "color", "power"]),
    ("Backpack", ["color", "size", "material"]),
    ("Bicycle", ["size", "color", "type"]),
    ("Bluetooth Speaker", ["color", "connectivity", "power"]),
    ("Bookshelf", ["material", "color", "size"]),
    ("Coffee Maker", ["color", "capacity", "type"]),
    ("Cycling Helmet", ["size", "color", "style"]),
    ("Desk Lamp", ["color", "power", "style"]),
    ("Digital Camera", ["resolution", "color", "storage"]),
    ("Dumbbell Set", ["weight", "material", "type"]),
    ("E-Reader", ["screen size", "storage", "connectivity"]),
    ("Electric Kettle", ["capacity", "color", "material"]),
    ("Electric Toothbrush", ["color", "power", "type"]),
    ("Espresso Machine", ["color", "capacity", "type"]),
    ("Fleece Jacket", ["size", "color", "pattern"]),
    ("Gaming Mouse", ["color", "connectivity", "style"]),
    ("Garden Hose", ["length", "material", "color"]),
    ("Grill", ["type", "power", "color"]),
    ("Headphones", ["color", "connectivity", "type"]),
    ("Hiking Boots", ["shoe size", "material", "color"]),
    ("Indoor Security Camera", ["resolution", "connectivity", "power"]),
    ("Jigsaw Puzzle", ["pieces", "pattern", "style"]),
    ("LED Light Bulb", ["power", "connectivity", "type"]),
    ("Laptop", ["screen size", "storage", "color"]),
    ("Luggage Set", ["size", "color", "material"]),
    ("Makeup Kit", ["type", "scent", "color"]),
    ("Mechanical Keyboard", ["connectivity", "color", "style"]),
    ("Notebook", ["size", "pattern", "material"]),
    ("Office Chair", ["material", "color", "style"]),
    ("Patio Umbrella", ["size", "color", "pattern"]),
    ("Perfume", ["scent", "capacity", "type"]),
    ("Pet Bed", ["size", "color", "material"]),
    ("Portable Charger", ["power", "color", "compatibility"]),
    ("Running Shoes", ["shoe size", "color", "material"]),
    ("Skateboard", ["material", "pattern", "size"]),
    ("Smart Thermostat", ["compatibility", "color", "power"]),
    ("Smart Watch", ["color", "connectivity", "style"]),
    ("Smartphone", ["color", "storage", "screen size"]),
    ("Sneakers", ["shoe size", "color", "style"]),
    ("Sunglasses", ["color", "style", "material"]),
    ("Tablet", ["screen size", "storage", "color"]),
    ("Tea Kettle", ["material", "capacity", "color"]),
    ("Vacuum Cleaner", ["type", "power", "color"]),
    ("Wall Clock", ["style", "color", "material"]),
    ("Water Bottle", ["capacity", "color", "material"]),
    ("Wireless Earbuds", ["color", "compatibility", "power"]),
    ("Wristwatch", ["style", "material", "color"]),
    ("Yoga Mat", ["material", "color", "pattern"]),
    ("T-Shirt", ["size", "color", "material"]),
]

# base price range in dollars per product (low, high); variants vary around the product's base
PRICE_RANGE = (15, 1500)

STATUSES = ["pending", "processed", "delivered", "cancelled", "pending (item modified)", "return requested",
            "exchange requested"]
CANCEL_REASONS = ["", "no longer needed", "ordered by mistake"]
PAYMENT_KINDS = ["credit_card", "paypal", "gift_card"]
TRANSACTION_TYPES = ["payment", "refund"]
