import Testing
@testable import StarKVPolicies
