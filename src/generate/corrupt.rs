//! Deliberately bad rows for `--invalid-ratio`, so the loader's error path runs on real files.
//!
//! Which rows go bad is arithmetic, not chance: row `i` is bad when `floor((i+1)·r)` exceeds
//! `floor(i·r)`, which spreads exactly `floor(n·r)` bad rows evenly, and the kinds take turns.
//! The kinds list what each corruption should make the loader say, for the tests to compare.

use crate::domain::field::RejectKind;

/// One way of spoiling a row, with the column and reject kind the loader must report for it.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub enum BadRowKind {
    BadUuid,
    AgeOutOfRange,
    AgeNotANumber,
    BadDate,
    UnknownTier,
    WrongColumnCount,
    EmptyUserId,
    BadAmount,
    UnknownCurrency,
}

/// Bad kinds of the user file, in turn order.
pub const USER_BAD_KINDS: [BadRowKind; 7] = [
    BadRowKind::BadUuid,
    BadRowKind::AgeOutOfRange,
    BadRowKind::AgeNotANumber,
    BadRowKind::BadDate,
    BadRowKind::UnknownTier,
    BadRowKind::WrongColumnCount,
    BadRowKind::EmptyUserId,
];

/// Bad kinds of the transaction file, in turn order.
pub const TRANSACTION_BAD_KINDS: [BadRowKind; 6] = [
    BadRowKind::BadUuid,
    BadRowKind::BadAmount,
    BadRowKind::BadDate,
    BadRowKind::UnknownCurrency,
    BadRowKind::WrongColumnCount,
    BadRowKind::EmptyUserId,
];

/// Which file a row belongs to: the same kind spoils different columns in each.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum FileKind {
    Users,
    Transactions,
}

impl BadRowKind {
    /// The column (`None`: the whole row) and reject kind the loader reports for this corruption.
    pub fn expected(self, file: FileKind) -> (Option<&'static str>, RejectKind) {
        use FileKind::*;
        match (self, file) {
            (Self::BadUuid, Users) => (Some("user_id"), RejectKind::BadUuid),
            (Self::BadUuid, Transactions) => (Some("tx_id"), RejectKind::BadUuid),
            (Self::AgeOutOfRange, _) => (Some("age"), RejectKind::OutOfRange),
            (Self::AgeNotANumber, _) => (Some("age"), RejectKind::NotANumber),
            (Self::BadDate, Users) => (Some("registration_date"), RejectKind::BadDate),
            (Self::BadDate, Transactions) => (Some("timestamp"), RejectKind::BadDate),
            (Self::UnknownTier, _) => (Some("customer_tier"), RejectKind::UnknownValue),
            (Self::WrongColumnCount, _) => (None, RejectKind::WrongColumnCount),
            (Self::EmptyUserId, _) => (Some("user_id"), RejectKind::Missing),
            (Self::BadAmount, _) => (Some("amount"), RejectKind::NotANumber),
            (Self::UnknownCurrency, _) => (Some("currency"), RejectKind::UnknownValue),
        }
    }

    /// Spoils `fields` (a good row in header order) the way this kind says.
    pub fn apply(self, file: FileKind, fields: &mut Vec<String>) {
        let (column, _) = self.expected(file);
        let index = |name: &str| match file {
            FileKind::Users => crate::domain::user::USER_COLUMNS
                .iter()
                .position(|c| *c == name),
            FileKind::Transactions => crate::domain::batch_transaction::TRANSACTION_COLUMNS
                .iter()
                .position(|c| *c == name),
        };
        let value = match self {
            Self::BadUuid => "not-a-uuid",
            Self::AgeOutOfRange => "150",
            Self::AgeNotANumber => "forty",
            Self::BadDate => "2025-02-30T25:61:00",
            Self::UnknownTier => "diamond",
            Self::EmptyUserId => "",
            Self::BadAmount => "12.3.4",
            Self::UnknownCurrency => "XYZ",
            Self::WrongColumnCount => {
                // Users lose their last field, transactions gain one: both directions get tested.
                match file {
                    FileKind::Users => {
                        fields.pop();
                    }
                    FileKind::Transactions => fields.push("extra".to_string()),
                }
                return;
            }
        };
        let at = index(column.expect("field-level kinds name a column")).expect("known column");
        fields[at] = value.to_string();
    }
}

/// Decides which rows of a file are bad and how.
#[derive(Debug, Clone, Copy)]
pub struct BadRowPlan {
    ratio: f64,
    kinds: &'static [BadRowKind],
}

impl BadRowPlan {
    pub fn new(ratio: f64, file: FileKind) -> Self {
        let kinds: &'static [BadRowKind] = match file {
            FileKind::Users => &USER_BAD_KINDS,
            FileKind::Transactions => &TRANSACTION_BAD_KINDS,
        };
        Self {
            ratio: ratio.clamp(0.0, 1.0),
            kinds,
        }
    }

    /// The corruption for row `index` (0-based data row), if that row is to be bad.
    pub fn kind_for(&self, index: u64) -> Option<BadRowKind> {
        let before = (index as f64 * self.ratio).floor() as u64;
        let after = ((index + 1) as f64 * self.ratio).floor() as u64;
        (after > before).then(|| self.kinds[(before % self.kinds.len() as u64) as usize])
    }

    /// How many of `rows` rows are bad.
    pub fn bad_rows(&self, rows: u64) -> u64 {
        (rows as f64 * self.ratio).floor() as u64
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::domain::batch_transaction::BatchTransaction;
    use crate::domain::user::UserRecord;

    #[test]
    fn the_plan_spoils_an_exact_share_and_every_kind() {
        let plan = BadRowPlan::new(0.07, FileKind::Users);
        let kinds: Vec<_> = (0..1000).filter_map(|i| plan.kind_for(i)).collect();
        assert_eq!(kinds.len() as u64, plan.bad_rows(1000));
        for kind in USER_BAD_KINDS {
            assert_eq!(kinds.iter().filter(|k| **k == kind).count(), 10, "{kind:?}");
        }
        assert_eq!(BadRowPlan::new(0.0, FileKind::Users).kind_for(5), None);
    }

    #[test]
    fn each_corruption_is_refused_as_announced() {
        let user: Vec<String> = crate::domain::user::SAMPLE_ROW.map(String::from).to_vec();
        for kind in USER_BAD_KINDS {
            let mut fields = user.clone();
            kind.apply(FileKind::Users, &mut fields);
            let refs: Vec<&str> = fields.iter().map(String::as_str).collect();
            let err = UserRecord::parse(&refs).unwrap_err();
            assert_eq!(
                (err.column, err.kind),
                kind.expected(FileKind::Users),
                "{kind:?}"
            );
        }
        let tx: Vec<String> = [
            "67e55044-10b1-426f-9247-bb680e5fe0c8",
            "0d6f3c4e-4c41-4f39-9d3c-3b5b8f7c9a10",
            "12.50",
            "EUR",
            "Whole Foods",
            "groceries",
            "2025-03-04T05:06:07Z",
        ]
        .map(String::from)
        .to_vec();
        for kind in TRANSACTION_BAD_KINDS {
            let mut fields = tx.clone();
            kind.apply(FileKind::Transactions, &mut fields);
            let refs: Vec<&str> = fields.iter().map(String::as_str).collect();
            let err = BatchTransaction::parse(&refs).unwrap_err();
            assert_eq!(
                (err.column, err.kind),
                kind.expected(FileKind::Transactions),
                "{kind:?}"
            );
        }
    }
}
