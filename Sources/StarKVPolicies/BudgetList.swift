import Foundation

/// Why a budget list given on the command line or in a sweep file was refused.
///
/// The message names the offending item and says what is accepted, so it can be shown as is.
public struct BudgetListError: Error, Equatable, CustomStringConvertible {
    /// The item as the user wrote it (empty for an empty item).
    public let item: String
    /// What is wrong with it, in words a user can act on.
    public let reason: String

    public var description: String {
        item.isEmpty ? "budget list: \(reason)" : "budget '\(item)': \(reason)"
    }
}

extension KVBudget {
    /// Parses one budget and checks its range: a percentage in (0, 100] (`20`, `20%`, `12.5%`) or a
    /// token count ≥ 1 (`512tok`, `512t`). Negative numbers, zero, percentages above 100 and
    /// non-finite values are refused with a message that says which rule they broke.
    public static func parseChecked(_ text: String) throws(BudgetListError) -> KVBudget {
        let item = text.trimmingCharacters(in: .whitespaces)
        guard !item.isEmpty else {
            throw BudgetListError(item: "", reason: "empty item (a trailing or doubled comma?)")
        }
        if item.hasPrefix("-") {
            throw BudgetListError(item: item, reason: "negative budgets are not allowed; use a percentage in (0, 100] or a token count ≥ 1 such as 512tok")
        }
        guard let budget = KVBudget(parsing: item) else {
            throw BudgetListError(item: item, reason: "not a percentage (20, 12.5%) or a token count (512tok)")
        }
        switch budget {
        case .percent(let p):
            guard p > 0, p <= 100 else {
                throw BudgetListError(item: item, reason: "a percentage must be in (0, 100]")
            }
        case .tokens(let n):
            guard n >= 1 else {
                throw BudgetListError(item: item, reason: "a token budget must be at least 1tok")
            }
        }
        return budget
    }

    /// Parses a comma-separated budget list such as `10,20,40,100` or `20,512tok`, in the order
    /// given. Every item goes through `parseChecked(_:)`; an empty item (a trailing or doubled
    /// comma) and a budget given twice (`20,20%`) are refused. This is the one budget parser that
    /// `starkv replay`, `starkv memory` and sweep files share.
    public static func parseList(_ text: String) throws(BudgetListError) -> [KVBudget] {
        var budgets: [KVBudget] = []
        for part in text.split(separator: ",", omittingEmptySubsequences: false) {
            let budget = try parseChecked(String(part))
            if budgets.contains(budget) {
                throw BudgetListError(item: part.trimmingCharacters(in: .whitespaces), reason: "given twice (\(budget))")
            }
            budgets.append(budget)
        }
        return budgets
    }
}
