//! Every stored state string, in one place: the `status` column of `accounts`,
//! `login_challenges`, `temp_passwords` and `payments`, as enums. They bind as `TEXT`
//! (`.eq(LoginStatus::Pending)`) and compare with the loaded `String`
//! (`row.status == LoginStatus::Pending`); no state literal appears outside this file.

use std::{fmt, str::FromStr};

use diesel::{
    expression::AsExpression,
    serialize::{self, IsNull, Output, ToSql},
    sql_types::Text,
};

use super::MultiBackend;

macro_rules! states {
    ($(#[$meta:meta])* $name:ident { $($(#[$vmeta:meta])* $variant:ident => $text:literal),+ $(,)? }) => {
        $(#[$meta])*
        #[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, AsExpression, serde::Serialize)]
        #[diesel(sql_type = Text)]
        #[serde(rename_all = "snake_case")]
        pub enum $name {
            $($(#[$vmeta])* $variant),+
        }

        impl $name {
            pub const ALL: &'static [$name] = &[$($name::$variant),+];

            /// The stored string.
            pub const fn as_str(self) -> &'static str {
                match self {
                    $($name::$variant => $text),+
                }
            }
        }

        impl FromStr for $name {
            type Err = UnknownState;

            fn from_str(text: &str) -> Result<$name, UnknownState> {
                match text {
                    $($text => Ok($name::$variant),)+
                    other => Err(UnknownState(other.chars().take(32).collect())),
                }
            }
        }

        impl fmt::Display for $name {
            fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
                f.write_str(self.as_str())
            }
        }

        impl ToSql<Text, MultiBackend> for $name {
            fn to_sql<'b>(&'b self, out: &mut Output<'b, '_, MultiBackend>) -> serialize::Result {
                out.set_value((Text, self.as_str()));
                Ok(IsNull::No)
            }
        }

        impl ToSql<Text, diesel::mysql::Mysql> for $name {
            fn to_sql<'b>(
                &'b self,
                out: &mut Output<'b, '_, diesel::mysql::Mysql>,
            ) -> serialize::Result {
                <str as ToSql<Text, diesel::mysql::Mysql>>::to_sql(self.as_str(), out)
            }
        }

        impl ToSql<Text, diesel::sqlite::Sqlite> for $name {
            fn to_sql<'b>(
                &'b self,
                out: &mut Output<'b, '_, diesel::sqlite::Sqlite>,
            ) -> serialize::Result {
                <str as ToSql<Text, diesel::sqlite::Sqlite>>::to_sql(self.as_str(), out)
            }
        }

        impl PartialEq<$name> for String {
            fn eq(&self, other: &$name) -> bool {
                self == other.as_str()
            }
        }

        impl PartialEq<$name> for str {
            fn eq(&self, other: &$name) -> bool {
                self == other.as_str()
            }
        }
    };
}

/// A stored string that names no state.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[error("unknown state {0:?}")]
pub struct UnknownState(pub String);

states! {
    /// `accounts.status`.
    AccountStatus {
        Active => "active",
        Disabled => "disabled",
    }
}

states! {
    /// `login_challenges.status`: PENDING -> VERIFIED -> CONSUMED, or FAILED/CANCELLED.
    LoginStatus {
        Pending => "pending",
        Verified => "verified",
        Failed => "failed",
        /// The enrolled phone changed while it was pending.
        Cancelled => "cancelled",
        /// Exchanged for a session.
        Consumed => "consumed",
    }
}

states! {
    /// `temp_passwords.status`: active <-> paused, either -> revoked (for good).
    TempPasswordStatus {
        Active => "active",
        Paused => "paused",
        Revoked => "revoked",
    }
}

states! {
    /// `payments.status`: pending (inside the payment's transaction only), then approved
    /// or declined.
    PaymentStatus {
        Pending => "pending",
        Approved => "approved",
        Declined => "declined",
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn every_state_round_trips() {
        fn check<T: Copy + fmt::Debug + PartialEq + FromStr + fmt::Display>(all: &[T])
        where
            T::Err: fmt::Debug,
        {
            for &state in all {
                assert_eq!(state.to_string().parse::<T>().unwrap(), state);
            }
        }
        check(AccountStatus::ALL);
        check(LoginStatus::ALL);
        check(TempPasswordStatus::ALL);
        check(PaymentStatus::ALL);
        assert!("nonsense".parse::<LoginStatus>().is_err());
    }
}
