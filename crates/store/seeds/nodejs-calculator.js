module.exports = async (context, callback) => {
    const { operation, a, b } = context.params;
    
    try {
        let result;
        switch (operation) {
            case "add":
                result = a + b;
                break;
            case "subtract":
                result = a - b;
                break;
            case "multiply":
                result = a * b;
                break;
            case "divide":
                if (b === 0) {
                    throw new Error("Division by zero");
                }
                result = a / b;
                break;
            default:
                throw new Error(`Unknown operation: ${operation}`);
        }
        
        callback(null, { result });
    } catch (error) {
        callback(error);
    }
};