//! The closed vocabularies of ARCHITECTURE §3 and §4, in one place: the generators draw from them and
//! the validators check against them, so the two can never disagree.

/// Currencies of `dim_currencies`; any other code is rejected.
pub const CURRENCIES: [&str; 5] = ["USD", "EUR", "GBP", "CAD", "AUD"];

/// Categories of stream transactions (ARCHITECTURE §4).
pub const STREAM_CATEGORIES: [&str; 12] = [
    "online_shopping",
    "food_delivery",
    "ride_sharing",
    "streaming_services",
    "gaming",
    "social_media",
    "mobile_apps",
    "digital_subscriptions",
    "crypto_trading",
    "peer_to_peer",
    "micro_transactions",
    "instant_transfers",
];

/// Spending categories of the monthly files: users' preferred categories and batch transactions.
pub const BATCH_CATEGORIES: [&str; 7] = [
    "groceries",
    "entertainment",
    "travel",
    "technology",
    "fashion",
    "health",
    "education",
];

pub const STATUSES: [&str; 3] = ["approved", "declined", "pending"];

pub const PAYMENT_METHODS: [&str; 5] = [
    "credit_card",
    "debit_card",
    "apple_pay",
    "google_pay",
    "bank_transfer",
];

pub const INCOME_BRACKETS: [&str; 4] = ["low", "medium", "high", "very_high"];
pub const CUSTOMER_TIERS: [&str; 4] = ["bronze", "silver", "gold", "platinum"];
pub const RISK_PROFILES: [&str; 3] = ["aggressive", "moderate", "conservative"];

/// `source_system` of every row in the monthly user files.
pub const USER_SOURCE_SYSTEM: &str = "third_party_registration";
/// `source_system` of stream messages.
pub const STREAM_SOURCE_SYSTEM: &str = "streaming_kafka";

/// Exact CSV headers of ARCHITECTURE §3.
pub const USERS_CSV_HEADER: &str = "user_id,first_name,last_name,email,age,income_bracket,customer_tier,risk_profile,city,state,country,registration_date,preferred_categories,is_active,source_system";
pub const TRANSACTIONS_CSV_HEADER: &str =
    "tx_id,user_id,amount,currency,merchant,category,timestamp";

/// The 20 merchants of generated stream traffic, each with the stream category it sells in.
/// Every one of the 12 stream categories has at least one merchant.
pub const STREAM_MERCHANTS: [(&str, &str); 20] = [
    ("Amazon", "online_shopping"),
    ("eBay", "online_shopping"),
    ("Etsy", "online_shopping"),
    ("DoorDash", "food_delivery"),
    ("Uber Eats", "food_delivery"),
    ("Uber", "ride_sharing"),
    ("Lyft", "ride_sharing"),
    ("Netflix", "streaming_services"),
    ("Spotify", "streaming_services"),
    ("Disney+", "streaming_services"),
    ("Steam", "gaming"),
    ("Meta", "social_media"),
    ("Apple App Store", "mobile_apps"),
    ("Google Play", "mobile_apps"),
    ("Microsoft 365", "digital_subscriptions"),
    ("Coinbase", "crypto_trading"),
    ("Venmo", "peer_to_peer"),
    ("Roblox", "micro_transactions"),
    ("Revolut", "instant_transfers"),
    ("Wise", "instant_transfers"),
];

/// Home cities of stream users with their ISO country code and local currency.
pub const STREAM_CITIES: [(&str, &str, &str); 12] = [
    ("Austin", "US", "USD"),
    ("New York", "US", "USD"),
    ("San Francisco", "US", "USD"),
    ("Chicago", "US", "USD"),
    ("London", "GB", "GBP"),
    ("Manchester", "GB", "GBP"),
    ("Berlin", "DE", "EUR"),
    ("Paris", "FR", "EUR"),
    ("Toronto", "CA", "CAD"),
    ("Vancouver", "CA", "CAD"),
    ("Sydney", "AU", "AUD"),
    ("Melbourne", "AU", "AUD"),
];

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn stream_catalog_is_consistent() {
        for category in STREAM_CATEGORIES {
            assert!(
                STREAM_MERCHANTS.iter().any(|(_, c)| *c == category),
                "no merchant sells {category}"
            );
        }
        for (merchant, category) in STREAM_MERCHANTS {
            assert!(
                STREAM_CATEGORIES.contains(&category),
                "{merchant}: {category}"
            );
        }
        for (city, _, currency) in STREAM_CITIES {
            assert!(CURRENCIES.contains(&currency), "{city}: {currency}");
        }
    }
}
