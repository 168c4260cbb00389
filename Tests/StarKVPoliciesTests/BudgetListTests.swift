import Testing
@testable import StarKVPolicies

@Suite struct BudgetListTests {
    @Test func percentagesAndTokenCountsParseInOrder() throws {
        #expect(try KVBudget.parseList("10,20%, 12.5 ,512tok,100") == [.percent(10), .percent(20), .percent(12.5), .tokens(512), .percent(100)])
    }

    @Test(arguments: ["-5", "0", "0%", "150", "100.5%", "0tok", "-3tok", "nan", "inf", "abc", "20x"])
    func outOfRangeOrMalformedBudgetsAreRefused(_ text: String) {
        #expect(throws: BudgetListError.self) { try KVBudget.parseList(text) }
    }

    @Test func negativeBudgetMessageSaysNegative() {
        #expect(throws: BudgetListError(item: "-5", reason: "negative budgets are not allowed; use a percentage in (0, 100] or a token count ≥ 1 such as 512tok")) {
            try KVBudget.parseList("20,-5")
        }
    }

    @Test(arguments: ["20,20", "20,20%", "512tok,512t"])
    func duplicatesAreRefused(_ text: String) {
        #expect(throws: BudgetListError.self) { try KVBudget.parseList(text) }
    }

    @Test(arguments: ["20%,", ",20", "20,,40", ""])
    func emptyItemsAreRefused(_ text: String) {
        #expect(throws: BudgetListError(item: "", reason: "empty item (a trailing or doubled comma?)")) { try KVBudget.parseList(text) }
    }
}
